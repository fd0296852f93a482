// A stock Yjs client (yjs + y-websocket, unchanged) driven line by line over stdin/stdout by
// tests/interop.rs. Usage: node peer.mjs SERVER_URL ROOM TOKEN NAME
// Commands (one per line): insert POS JSON_TEXT | delete POS LEN | random N SEED | text |
// members | quit. Each command answers with one JSON line {"reply": ...}; events arrive as
// {"event": ...} lines (synced, denied).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [serverUrl, room, token, name] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

// y-websocket reports an auth permission-denied message with console.warn; surface it as an event.
const warn = console.warn
console.warn = (...args) => {
  const text = args.join(' ')
  if (text.includes('Permission denied')) out({ event: 'denied', reason: text })
  else warn(...args)
}

const doc = new Y.Doc()
const text = doc.getText('content')
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  params: { token },
  disableBc: true // otherwise peers in one process could sync without the relay
})
provider.awareness.setLocalStateField('user', { name, color: '#56b6c2' })
provider.on('sync', (synced) => { if (synced) out({ event: 'synced' }) })

// A small deterministic PRNG so a run can be reproduced from its seed.
const rng = (seed) => () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
const pieces = ['a', 'bc', 'é', '😀', '日本', 'e\u0301', '\n', '\t', 'xyz ']

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const [cmd, ...rest] = line.split(' ')
  switch (cmd) {
    case 'insert': text.insert(Number(rest[0]), JSON.parse(rest.slice(1).join(' '))); out({ reply: 'ok' }); break
    case 'delete': text.delete(Number(rest[0]), Number(rest[1])); out({ reply: 'ok' }); break
    case 'random': {
      const next = rng(Number(rest[1]))
      for (let i = 0; i < Number(rest[0]); i++) {
        const len = text.length
        if (len > 0 && next() < 0.25) {
          // Delete whole characters only: UTF-16 offsets must not split a surrogate pair.
          const chars = Array.from(text.toString())
          const at = Math.floor(next() * chars.length)
          const n = Math.min(1 + Math.floor(next() * 3), chars.length - at)
          const start = chars.slice(0, at).join('').length
          text.delete(start, chars.slice(at, at + n).join('').length)
        } else {
          const chars = Array.from(text.toString())
          const at = chars.slice(0, Math.floor(next() * (chars.length + 1))).join('').length
          text.insert(at, pieces[Math.floor(next() * pieces.length)])
        }
      }
      out({ reply: 'ok' })
      break
    }
    case 'text': out({ reply: text.toString() }); break
    case 'members': {
      const names = []
      provider.awareness.getStates().forEach((state, id) => {
        if (id !== doc.clientID && state.user) names.push({ name: state.user.name, role: state.role ?? null, cursor: !!state.cursor })
      })
      out({ reply: names })
      break
    }
    case 'quit': provider.destroy(); out({ reply: 'bye' }); setTimeout(() => process.exit(0), 50); break
    default: out({ reply: 'error', error: `unknown command ${cmd}` })
  }
})
rl.on('close', () => { provider.destroy(); process.exit(0) })
