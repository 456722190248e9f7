//! The `stoa-tap` command line.
#![forbid(unsafe_code)]

mod cli;

// Exchanges are built from many small strings; mimalloc handles that churn
// markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
