//! meshctl: the mesh's command-line interface.
#![forbid(unsafe_code)]

mod http;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_controller::admin::StatusReport;

/// Default admin address of the controller.
const DEFAULT_ADMIN: &str = "127.0.0.1:15014";

/// meshctl: inspect and operate the mesh.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Controller admin address (host:port).
    #[arg(long, global = true, env = "MESH_CONTROLLER_ADMIN", default_value = DEFAULT_ADMIN)]
    controller: String,
    /// Request timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 3000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connected agents and waypoints and the config version each acknowledged.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The translated model the controller serves (JSON).
    ConfigDump,
    /// Current configuration errors on the controller.
    Errors,
    /// Load a directory of YAML offline and report every error (exit 1 if any).
    Analyze {
        /// Directory of YAML files.
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_millis(args.timeout_ms);
    match args.command {
        Command::Status { json } => {
            let body = http::get(&args.controller, "/clients", timeout)?;
            if json {
                println!("{body}");
            } else {
                let report: StatusReport = serde_json::from_str(&body)?;
                print!("{}", status::render(&report));
            }
        }
        Command::ConfigDump => {
            println!("{}", http::get(&args.controller, "/config_dump", timeout)?)
        }
        Command::Errors => println!("{}", http::get(&args.controller, "/errors", timeout)?),
        Command::Analyze { dir } => {
            let controller = mesh_controller::controller::Controller::new(Default::default());
            mesh_controller::source::dir::DirSource::new(&dir, controller.clone()).scan()?;
            let current = controller.current();
            for e in current.errors.iter() {
                println!("{e}");
            }
            println!("{} errors", current.errors.len());
            if !current.errors.is_empty() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
