//! Editing traces (Joseph Gentle's editing-traces format): load and replay them.
//!
//! A trace is gzip JSON `{ startContent, endContent, txns: [{ time, patches: [[pos, del, ins]] }] }`
//! with positions in Unicode scalar values (chars), which is what [`Edit`] uses.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::sync::Edit;

#[derive(Deserialize)]
struct RawTrace {
    #[serde(rename = "startContent")]
    start_content: String,
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<RawTxn>,
}

#[derive(Deserialize)]
struct RawTxn {
    patches: Vec<(usize, usize, String)>,
}

/// A loaded trace: transactions of char-offset edits, applied in order from `start`.
#[derive(Debug, Clone)]
pub struct Trace {
    pub start: String,
    pub end: String,
    pub txns: Vec<Vec<Edit>>,
}

impl Trace {
    pub fn load(path: &Path) -> anyhow::Result<Trace> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut json = String::new();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(file).read_to_string(&mut json)
        } else {
            std::io::BufReader::new(file).read_to_string(&mut json)
        }
        .with_context(|| format!("reading {}", path.display()))?;
        let raw: RawTrace =
            serde_json::from_str(&json).with_context(|| format!("parsing {}", path.display()))?;
        let txns = raw
            .txns
            .into_iter()
            .map(|t| {
                t.patches
                    .into_iter()
                    .map(|(at, delete, insert)| Edit { at, delete, insert })
                    .collect()
            })
            .collect();
        Ok(Trace {
            start: raw.start_content,
            end: raw.end_content,
            txns,
        })
    }

    pub fn patch_count(&self) -> usize {
        self.txns.iter().map(Vec::len).sum()
    }
}
