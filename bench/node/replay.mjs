// Node yjs on an editing trace, the way `pairedit bench replay --engine yrs` drives yrs: a writer
// Y.Doc with one transaction per patch, its updates merged every WINDOW patches (the flush
// tick), a replica Y.Doc applying each merged update. Prints one JSON line like the Rust engines.
// With `observe`, the replica also does what an editor binding on Yjs does (y-codemirror,
// y-monaco): it reads each update's `event.delta` and applies it to its own copy of the text.
// Usage: node replay.mjs TRACE.json[.gz] [WINDOW] [observe]
import * as Y from 'yjs'
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'

const [path, windowArg, mode] = process.argv.slice(2)
const observe = mode === 'observe'
const window = Math.max(1, Number(windowArg ?? 50))
const raw = readFileSync(path)
const trace = JSON.parse((path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8'))
const patches = trace.txns.flatMap((t) => t.patches)
// Trace offsets count code points; Y.Text counts UTF-16 units. They differ only past U+FFFF.
const astral = patches.some(([, , ins]) => /[\u{10000}-\u{10FFFF}]/u.test(ins))
if (astral) {
  console.error('trace has characters past U+FFFF: this script assumes it has none')
  process.exit(2)
}

const started = process.hrtime.bigint()
const writer = new Y.Doc()
const replica = new Y.Doc()
const text = writer.getText('content')
let pending = []
let updates = 0
let bytes = 0
writer.on('update', (u) => pending.push(u))
// The binding's copy of the text, kept from the deltas (checked against endContent at the end).
let mirror = ''
if (observe) {
  replica.getText('content').observe((event) => {
    let at = 0
    for (const op of event.delta) {
      if (op.retain !== undefined) at += op.retain
      else if (op.delete !== undefined) mirror = mirror.slice(0, at) + mirror.slice(at + op.delete)
      else if (typeof op.insert === 'string') {
        mirror = mirror.slice(0, at) + op.insert + mirror.slice(at)
        at += op.insert.length
      }
    }
  })
}
patches.forEach(([pos, del, ins], i) => {
  writer.transact(() => {
    if (del > 0) text.delete(pos, del)
    if (ins.length > 0) text.insert(pos, ins)
  })
  if ((i + 1) % window === 0 || i + 1 === patches.length) {
    if (pending.length > 0) {
      const merged = pending.length === 1 ? pending[0] : Y.mergeUpdates(pending)
      pending = []
      Y.applyUpdate(replica, merged)
      updates += 1
      bytes += merged.length
    }
  }
})
const millis = Number(process.hrtime.bigint() - started) / 1e6
if (text.toString() !== trace.endContent) throw new Error('writer did not reach endContent')
if (replica.getText('content').toString() !== trace.endContent) throw new Error('replica did not reach endContent')
if (observe && mirror !== trace.endContent) throw new Error("replica's mirror did not reach endContent")
console.log(JSON.stringify({
  engine: observe ? 'yjs + delta' : 'yjs',
  patches: patches.length,
  updates,
  update_bytes: bytes,
  millis,
  peak_rss_kib: Math.round(process.resourceUsage().maxRSS)
}))
