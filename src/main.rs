use std::process::ExitCode;

use devenv::cli;
use devenv::commands::{self, Context};
use devenv::errors::{self, Error};

fn main() -> ExitCode {
    // A file size limit (`ulimit -f`) reached while writing the state would kill devenv with
    // SIGXFSZ in the middle of a command; ignored, the write fails with EFBIG and the command
    // says so and stops cleanly, like on a full disk.
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    devenv::completion::answer_if_asked();
    let cli = cli::parse();
    devenv::init_tls();
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(error) => {
            devenv::errln!("error: cannot read the current directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Context::new(&cli, cwd);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = runtime.block_on(async {
        let command = commands::run(&cli, &ctx);
        tokio::pin!(command);
        // Biased, the interrupt is listened for before the command first runs: its first
        // steps may run for a while without yielding (packing the tree), and a Ctrl-C then
        // must still end it cleanly.
        tokio::select! {
            biased;
            // Every object is labelled when it is created, so stopping here leaves nothing
            // that `down` cannot find, once the engine has done what it was asked: a request
            // on its way is carried out even if devenv exits, so it is let finish first.
            _ = tokio::signal::ctrl_c(), if !cli.command.handles_interrupt() => {
                let settle = async {
                    while devenv::docker::changes_in_flight() > 0 {
                        tokio::select! {
                            _ = &mut command => break,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                        }
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), settle).await;
                Err(Error::Interrupted)
            }
            result = &mut command => result,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if ctx.json() {
                devenv::ui::print_event("error", &errors::render_json(&error));
            } else {
                devenv::err!("{}", errors::render_text(&error));
            }
            ExitCode::from(errors::diagnose(&error).exit_code as u8)
        }
    }
}
