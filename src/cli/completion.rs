//! Shell completion. `inference-access completion bash|zsh|fish` prints a script that asks the
//! binary itself what to complete while the user types (clap_complete's dynamic engine), so
//! subcommands and flags come from the definitions that parse them, and access names come from the
//! cluster, read with the `-n`, `--kubeconfig` and `--context` typed so far. Named
//! `kubectl_complete-inference_access` (a link on PATH), the binary answers kubectl's plugin
//! completion the same way, so `kubectl inference-access status <TAB>` lists accesses too.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap_complete::CompleteEnv;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use kube::ResourceExt;
use kube::api::ListParams;

use super::Target;
use super::access::Cluster;
use crate::api::InferenceAccess;

/// Set by the scripts when they call the binary back for completions.
pub const ENV_VAR: &str = "INFERENCE_ACCESS_COMPLETE";

/// What kubectl runs, from PATH, to complete the plugin's arguments (kubectl's "plugin
/// completion": the arguments typed after the plugin's name, the last one being completed).
pub const KUBECTL_COMPLETER: &str = "kubectl_complete-inference_access";

/// A completion must never hang the shell: an unreachable cluster gives no names after this.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Cobra's ShellCompDirectiveNoFileComp: kubectl must not add file names to the candidates.
const NO_FILE_COMPLETION: &str = ":4";

#[derive(clap::Args)]
pub struct Args {
    pub shell: Shell,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Prints the script for `shell`. It completes the command as it was invoked (the binary's file
/// name, found on PATH when the shell calls it back).
pub fn print(args: &Args, cli: &clap::Command) -> Result<(), String> {
    let bin = std::env::args_os()
        .next()
        .as_deref()
        .and_then(|arg| Path::new(arg).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| cli.get_name().to_owned());
    let script = script(args.shell, cli.get_name(), &bin)?;
    std::io::stdout()
        .write_all(script.as_bytes())
        .map_err(|e| format!("cannot write the completion script: {e}"))
}

fn script(shell: Shell, name: &str, bin: &str) -> Result<String, String> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut out = Vec::new();
    completer
        .write_registration(ENV_VAR, name, bin, bin, &mut out)
        .map_err(|e| format!("cannot write the completion script: {e}"))?;
    String::from_utf8(out).map_err(|e| format!("cannot write the completion script: {e}"))
}

/// Answers a completion request, when this process is one: the first thing `main` does. `None`
/// for an ordinary run.
pub fn intercept(cli: fn() -> clap::Command) -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|arg| Path::new(arg).file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let current_dir = std::env::current_dir().ok();
    if program.as_deref() == Some(KUBECTL_COMPLETER) {
        let mut out = std::io::stdout().lock();
        let _ =
            out.write_all(kubectl_candidates(cli(), &args[1..], current_dir.as_deref()).as_bytes());
        return Some(ExitCode::SUCCESS);
    }
    std::env::var_os(ENV_VAR).filter(|v| !v.is_empty() && v != "0")?;
    // The scripts pass the command line being completed after `--`.
    let words: Vec<OsString> = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .cloned()
        .collect();
    let target = target_of(&words);
    let factory = move || with_access_names(cli(), &target);
    match CompleteEnv::with_factory(factory)
        .var(ENV_VAR)
        .try_complete(args, current_dir.as_deref())
    {
        Ok(true) => Some(ExitCode::SUCCESS),
        Ok(false) => None,
        Err(err) => {
            let _ = err.print();
            Some(ExitCode::FAILURE)
        }
    }
}

/// kubectl's plugin completion protocol: one candidate a line (`value<TAB>description`), then
/// cobra's directive. `args` are the plugin's arguments, the last one the word being completed.
fn kubectl_candidates(cli: clap::Command, args: &[OsString], current_dir: Option<&Path>) -> String {
    let mut words = vec![OsString::from(cli.get_name())];
    words.extend(args.iter().cloned());
    if words.len() == 1 {
        words.push(OsString::new());
    }
    let index = words.len() - 1;
    // As kubectl completes its own commands: flags only once the word starts with a dash.
    let flags = words[index].to_string_lossy().starts_with('-');
    let mut cmd = with_access_names(cli, &target_of(&words));
    let candidates =
        clap_complete::engine::complete(&mut cmd, words, index, current_dir).unwrap_or_default();
    let mut out = String::new();
    let shown = |c: &&CompletionCandidate| {
        !c.is_hide_set() && (flags || !c.get_value().to_string_lossy().starts_with('-'))
    };
    for candidate in candidates.iter().filter(shown) {
        out.push_str(&candidate.get_value().to_string_lossy());
        if let Some(help) = candidate.get_help() {
            out.push('\t');
            out.push_str(help.to_string().lines().next().unwrap_or_default());
        }
        out.push('\n');
    }
    out.push_str(NO_FILE_COMPLETION);
    out.push('\n');
    out
}

/// The cluster flags typed so far, as the commands would parse them.
fn target_of(words: &[OsString]) -> Target {
    let mut target = Target::default();
    let words: Vec<&str> = words.iter().filter_map(|w| w.to_str()).collect();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value)),
            _ => match word.strip_prefix("-n") {
                Some(value) if !value.is_empty() && !word.starts_with("--") => ("-n", Some(value)),
                _ => (word, None),
            },
        };
        if matches!(flag, "-n" | "--namespace" | "--kubeconfig" | "--context") {
            let value = inline.or_else(|| {
                i += 1;
                words.get(i).copied()
            });
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                match flag {
                    "--kubeconfig" => target.kubeconfig = Some(value.into()),
                    "--context" => target.context = Some(value.to_owned()),
                    _ => target.namespace = Some(value.to_owned()),
                }
            }
        }
        i += 1;
    }
    target
}

/// Every command that takes an access (a positional `name` next to the cluster flags) completes
/// it with the accesses of the namespace.
fn with_access_names(mut cli: clap::Command, target: &Target) -> clap::Command {
    let commands: Vec<String> = cli
        .get_subcommands()
        .filter(|command| {
            let args = || command.get_arguments();
            args().any(|a| a.get_id() == "name" && a.is_positional())
                && args().any(|a| a.get_id() == "kubeconfig")
        })
        .map(|command| command.get_name().to_owned())
        .collect();
    for command in commands {
        let target = target.clone();
        cli = cli.mut_subcommand(command, move |command| {
            command.mut_arg("name", move |arg| {
                arg.add(ArgValueCandidates::new(move || access_candidates(&target)))
            })
        });
    }
    cli
}

/// The accesses of the target namespace, each with its model and readiness; none when the
/// cluster cannot be asked (completion stays silent rather than print errors into the prompt).
fn access_candidates(target: &Target) -> Vec<CompletionCandidate> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let listed = tokio::time::timeout(LIST_TIMEOUT, async {
            let cluster = Cluster::connect(target).await?;
            cluster
                .accesses()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match listed {
            Ok(Ok(list)) => list.items.iter().map(candidate).collect(),
            _ => Vec::new(),
        }
    })
}

fn candidate(access: &InferenceAccess) -> CompletionCandidate {
    let ready = access
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == crate::reconcile::conditions::READY)
        })
        .map_or_else(
            || "not reconciled yet".to_owned(),
            |c| match c.status.as_str() {
                "True" => "Ready".to_owned(),
                _ => format!("not Ready: {}", c.reason),
            },
        );
    let help = format!(
        "InferenceService {}, {ready}",
        access.spec.inference_service.name
    );
    CompletionCandidate::new(access.name_any()).help(Some(help.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_cluster_flags_are_read_off_the_line_as_the_commands_parse_them() {
        let cases = [
            ("inference-access status ", Target::default()),
            (
                "inference-access status -n team-a --context=prod --kubeconfig /k ",
                Target {
                    namespace: Some("team-a".into()),
                    kubeconfig: Some("/k".into()),
                    context: Some("prod".into()),
                },
            ),
            (
                "inference-access status -nteam-b --namespace=team-c ",
                Target {
                    namespace: Some("team-c".into()),
                    ..Target::default()
                },
            ),
            (
                "inference-access predict x --data {} --context",
                Target::default(),
            ),
        ];
        for (line, expected) in cases {
            let target = target_of(&words(line));
            assert_eq!(
                (target.namespace, target.kubeconfig, target.context),
                (expected.namespace, expected.kubeconfig, expected.context),
                "{line}"
            );
        }
    }

    #[test]
    fn a_script_for_each_shell_calls_the_binary_back() {
        for (shell, registers) in [
            (
                Shell::Bash,
                "complete -o nospace -o bashdefault -o nosort -F _clap_complete_inference_access inference-access",
            ),
            (
                Shell::Zsh,
                "compdef _clap_dynamic_completer_inference_access inference-access",
            ),
            (
                Shell::Fish,
                "complete --keep-order --exclusive --command inference-access",
            ),
        ] {
            let text = script(shell, "inference-access", "inference-access").unwrap();
            assert!(text.contains(registers), "{shell:?}:\n{text}");
            assert!(
                text.contains("INFERENCE_ACCESS_COMPLETE="),
                "{shell:?}:\n{text}"
            );
        }
    }

    /// The client commands, as main.rs mounts them.
    fn cli() -> clap::Command {
        use clap::Subcommand as _;
        super::super::Command::augment_subcommands(clap::Command::new("inference-access"))
    }

    fn values(line: &[&str]) -> Vec<String> {
        let text = kubectl_candidates(
            cli(),
            &line.iter().map(OsString::from).collect::<Vec<_>>(),
            None,
        );
        text.lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn kubectl_gets_subcommands_and_flags_then_the_directive() {
        let top = values(&[""]);
        for command in [
            "predict", "status", "renew", "token", "curl", "login", "render", "doctor",
        ] {
            assert!(top.contains(&command.to_owned()), "{top:?}");
        }
        assert_eq!(top.last().map(String::as_str), Some(":4"));
        assert_eq!(values(&["sta"]), ["status", ":4"]);
        let flags = values(&["status", "--"]);
        for flag in ["--namespace", "--kubeconfig", "--context", "--output"] {
            assert!(flags.contains(&flag.to_owned()), "{flags:?}");
        }
        assert_eq!(values(&["status", "-o", "ya"]), ["yaml", ":4"]);
    }

    #[test]
    fn without_a_cluster_an_access_name_completes_to_nothing() {
        let missing = std::env::temp_dir().join("inference-access-no-such.kubeconfig");
        let line = ["status", "--kubeconfig", missing.to_str().unwrap(), ""];
        assert_eq!(values(&line), [":4"]);
    }
}
