//! Infers contracts from exchanges stored as JSON lines (the engine's
//! `fixtures/expected/*.jsonl` format) and writes every document.
//!
//! ```text
//! cargo run --release -p stoa-contracts --example infer -- OUT_DIR FILE.jsonl... [--repeat N]
//! ```
//! With `--repeat N` the exchanges are observed N times (target and
//! timestamps varied) and the observe throughput is printed.

use contracts::{openapi, summary, uac, Exchange, InferenceConfig, Observations};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 1u64;
    if let Some(i) = args.iter().position(|a| a == "--repeat") {
        repeat = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(1);
        args.drain(i..(i + 2).min(args.len()));
    }
    let out = args
        .first()
        .cloned()
        .ok_or("usage: infer OUT_DIR FILE.jsonl...")?;
    let mut exchanges: Vec<Exchange> = Vec::new();
    for f in &args[1..] {
        for line in std::fs::read_to_string(f)?.lines() {
            if let Ok(x) = serde_json::from_str::<Exchange>(line) {
                exchanges.push(x);
            }
        }
    }
    let cfg = InferenceConfig::default();
    let mut obs = Observations::new(&cfg);
    let start = Instant::now();
    let mut n = 0u64;
    for r in 0..repeat {
        for x in exchanges.iter_mut() {
            if r > 0 {
                x.seq_on_flow = x.seq_on_flow.wrapping_add(1);
                x.timing.request_first_ns += 1_000_000_000;
            }
            obs.observe(x);
            n += 1;
        }
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "observed {n} exchanges in {el:.3} s ({:.0}/s)",
        n as f64 / el
    );
    std::fs::create_dir_all(format!("{out}/uac"))?;
    std::fs::write(format!("{out}/observations.json"), obs.to_json())?;
    for d in openapi::emit(&obs, &cfg) {
        std::fs::write(format!("{out}/{}.openapi.yaml", d.name), d.to_yaml())?;
        std::fs::write(format!("{out}/{}.openapi.json", d.name), d.to_json())?;
    }
    for (name, u) in uac::emit(&obs, &cfg) {
        std::fs::write(
            format!("{out}/uac/{name}.json"),
            serde_json::to_string_pretty(&u)?,
        )?;
    }
    print!("{}", summary::endpoint_table(&obs));
    Ok(())
}
