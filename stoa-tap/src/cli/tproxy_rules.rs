//! `stoa-tap tproxy-rules install|remove|print`: the netfilter TPROXY rules
//! and policy routing that divert the gateway port to the relay
//! (see `packaging/tproxy.md` and `stoa_tap::source::tproxy::rules`).

use clap::{Args, ValueEnum};
use std::io::Write;
use std::process::{Command, Stdio};
use stoa_tap::source::tproxy::rules::{self, RuleSpec};

/// What to do with the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesAction {
    /// Apply the rules (replacing any previous stoa-tap rules).
    Install,
    /// Remove the rules.
    Remove,
    /// Print the install commands as a shell script.
    Print,
}

/// Which netfilter front-end writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesBackend {
    /// `nft -f -`, table `inet stoa_tap`.
    Nft,
    /// `iptables`/`ip6tables`, chains `STOA_TAP` and `STOA_TAP_DIVERT` in `mangle`.
    Iptables,
}

/// Arguments of `stoa-tap tproxy-rules`.
#[derive(Debug, Clone, Args)]
pub struct TproxyRulesArgs {
    /// install, remove or print.
    #[arg(value_enum)]
    pub action: RulesAction,
    /// Gateway port whose connections are diverted.
    #[arg(long, default_value_t = 5555)]
    pub port: u16,
    /// Port of the relay's transparent listener.
    #[arg(long, default_value_t = 15001)]
    pub listen_port: u16,
    /// Only divert connections arriving on this interface.
    #[arg(long)]
    pub iface: Option<String>,
    /// Divert mark (policy-routing fwmark).
    #[arg(long, default_value = "0x1", value_parser = parse_mark)]
    pub mark: u32,
    /// Mark of the relay's upstream sockets, exempted from diversion.
    #[arg(long, default_value = "0x2", value_parser = parse_mark)]
    pub upstream_mark: u32,
    /// Also divert IPv6.
    #[arg(long)]
    pub ipv6: bool,
    /// Routing table for the divert mark.
    #[arg(long, default_value_t = 100)]
    pub table: u32,
    /// Netfilter front-end.
    #[arg(long, value_enum, default_value_t = RulesBackend::Nft)]
    pub backend: RulesBackend,
    /// Divert for as long as the rules are installed, instead of only while
    /// the relay keeps the guard set filled (not recommended: a hung relay
    /// then blocks new connections to the gateway).
    #[arg(long)]
    pub no_guard: bool,
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad mark {s:?}: {e}"))
}

impl TproxyRulesArgs {
    fn spec(&self) -> RuleSpec {
        RuleSpec {
            port: self.port,
            listen_port: self.listen_port,
            iface: self.iface.clone(),
            mark: self.mark,
            upstream_mark: self.upstream_mark,
            ipv6: self.ipv6,
            route_table: self.table,
            guard: !self.no_guard,
        }
    }
}

/// The install commands as a shell script.
pub fn script(backend: RulesBackend, spec: &RuleSpec) -> String {
    let mut s = String::from("#!/bin/sh\n# stoa-tap TPROXY rules\nset -e\n");
    match backend {
        RulesBackend::Nft => {
            s.push_str("nft -f - <<'EOF'\n");
            s.push_str(&rules::nft_install(spec));
            s.push_str("EOF\n");
        }
        RulesBackend::Iptables => {
            for c in rules::iptables_install(spec) {
                s.push_str(&rules::shell_line(&c));
                s.push('\n');
            }
        }
    }
    for c in rules::routes_install(spec) {
        s.push_str(&rules::shell_line(&c));
        s.push('\n');
    }
    s.push_str("# remove with: stoa-tap tproxy-rules remove (same options)\n");
    s
}

/// Runs one command; `Err` carries its stderr.
fn exec(argv: &[String], stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", rules::shell_line(argv)))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes())
            .map_err(|e| format!("{}: {e}", rules::shell_line(argv)))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", rules::shell_line(argv)))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            rules::shell_line(argv),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn remove(backend: RulesBackend, spec: &RuleSpec) -> Vec<String> {
    let mut errors = Vec::new();
    match backend {
        RulesBackend::Nft => {
            let argv = vec!["nft".to_string(), "-f".into(), "-".into()];
            if let Err(e) = exec(&argv, Some(&rules::nft_remove())) {
                errors.push(e);
            }
        }
        RulesBackend::Iptables => {
            for c in rules::iptables_remove(spec) {
                if let Err(e) = exec(&c, None) {
                    errors.push(e);
                }
            }
        }
    }
    for c in rules::routes_remove(spec) {
        if let Err(e) = exec(&c, None) {
            errors.push(e);
        }
    }
    errors
}

fn install(backend: RulesBackend, spec: &RuleSpec) -> Result<(), String> {
    // Start clean: previous rules of ours (if any) go first, quietly.
    let _ = remove(backend, spec);
    match backend {
        RulesBackend::Nft => {
            let argv = vec!["nft".to_string(), "-f".into(), "-".into()];
            exec(&argv, Some(&rules::nft_install(spec)))?;
        }
        RulesBackend::Iptables => {
            for c in rules::iptables_install(spec) {
                exec(&c, None)?;
            }
        }
    }
    for c in rules::routes_install(spec) {
        exec(&c, None)?;
    }
    Ok(())
}

/// Runs the subcommand; returns the process exit code.
pub fn run(args: TproxyRulesArgs) -> i32 {
    let spec = args.spec();
    if let Err(e) = spec.validate() {
        eprintln!("stoa-tap tproxy-rules: {e}");
        return super::exit::USAGE;
    }
    match args.action {
        RulesAction::Print => {
            print!("{}", script(args.backend, &spec));
            super::exit::OK
        }
        RulesAction::Install => match install(args.backend, &spec) {
            Ok(()) => {
                tracing::info!(port = spec.port, listen_port = spec.listen_port, backend = ?args.backend, "tproxy rules installed");
                super::exit::OK
            }
            Err(e) => {
                eprintln!("stoa-tap tproxy-rules install: {e}");
                let _ = remove(args.backend, &spec);
                super::exit::FAILURE
            }
        },
        RulesAction::Remove => {
            let errors = remove(args.backend, &spec);
            if errors.is_empty() {
                super::exit::OK
            } else {
                for e in &errors {
                    eprintln!("stoa-tap tproxy-rules remove: {e}");
                }
                super::exit::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_parse_in_hex_and_decimal() {
        assert_eq!(parse_mark("0x10"), Ok(16));
        assert_eq!(parse_mark("3"), Ok(3));
        assert!(parse_mark("zz").is_err());
    }

    #[test]
    fn print_script_contains_nft_and_routes() {
        let s = script(RulesBackend::Nft, &RuleSpec::default());
        assert!(s.contains("nft -f - <<'EOF'\ntable inet stoa_tap\n"));
        assert!(s.contains("ip rule add fwmark 0x1/0x1 lookup 100\n"));
        let s = script(RulesBackend::Iptables, &RuleSpec::default());
        assert!(s.contains("iptables -t mangle -A PREROUTING -j STOA_TAP\n"));
    }
}
