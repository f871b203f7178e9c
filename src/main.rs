//! The `slipway` binary: the daemon (`serve`), the config checker (`check`) and the API client
//! (`get`, `apply`, `delete`). Parses arguments, sets up logging, hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use slipway::cli::{self, Deletable, EventArgs, GetOutput, Output, Resource, client};
use slipway::config;

#[derive(Parser, Debug)]
#[command(name = "slipway", version, about = "Turns empty VMs into Kubernetes clusters")]
struct Args {
    /// Log format: text for people, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLIPWAY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `slipway=debug` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "SLIPWAY_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Debug)]
struct Conn {
    /// Admin API URL [default: from the daemon's config, else http://127.0.0.1:9443].
    #[arg(long, env = "SLIPWAY_API")]
    api: Option<String>,
    /// File holding the admin token (or set SLIPWAY_TOKEN) [default: the daemon's token].
    #[arg(long, env = "SLIPWAY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate(s) to trust for an https admin API.
    #[arg(long, env = "SLIPWAY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Daemon config to read the API address and token from [default: /etc/slipway/slipway.toml if readable].
    #[arg(long, short = 'c', env = "SLIPWAY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ApiArgs {
    #[command(flatten)]
    conn: Conn,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long, short = 'c', default_value = config::DEFAULT_PATH, env = "SLIPWAY_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and list every problem in it.
    Check {
        #[arg(long, short = 'c', default_value = config::DEFAULT_PATH, env = "SLIPWAY_CONFIG")]
        config: PathBuf,
    },
    /// List objects (or show one) from a running daemon.
    Get {
        #[arg(value_enum)]
        resource: Resource,
        /// Show only this object: a node, cluster, profile or network by name, a lease by IP, a DNS
        /// zone, a load-balancer frontend or pool, a VM, a node's timeline, or a node's events.
        name: Option<String>,
        #[command(flatten)]
        events: EventArgs,
        #[command(flatten)]
        conn: Conn,
        /// Output format (zone: the DNS zones as RFC 1035 zone-file text, `get dns` only).
        #[arg(long, short = 'o', value_enum, default_value_t = GetOutput::Table)]
        output: GetOutput,
    },
    /// Create or replace the clusters, profiles and nodes in a YAML or JSON file (`-` for stdin).
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// OS images: list the built-in manifests, or fetch one into the images directory.
    Images {
        #[command(subcommand)]
        action: ImagesAction,
    },
    /// Make the running daemon read its config file again and apply it (what `systemctl reload
    /// slipway` does); prints what changed, or every problem of a file it refused.
    Reload {
        /// Send SIGHUP to the daemon with this PID instead of asking its API (systemd's
        /// `ExecReload=`): the daemon logs the outcome; nothing is printed.
        #[arg(long)]
        pid: Option<i32>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The instances sharing the daemon's state (etcd), which one leads, etcd's health and how
    /// far this instance's copy is behind.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Install a node again on its next network boot (after it reported an installed system).
    Reinstall {
        node: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Defined clusters: plan and apply a definition, follow its nodes' phases, retry failures.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Delete a node, cluster or profile, or release a lease (by IP).
    Delete {
        #[arg(value_enum)]
        kind: Deletable,
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a shell completion script (bash: `source <(slipway completions bash)`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (slipway.1 and one per subcommand) into a directory.
    Man {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterAction {
    /// What applying a definition (YAML or JSON, `-` for stdin) would create or change: every
    /// node with its MAC, address, VM and host. Nothing is changed. With NAME instead of a
    /// file: the stored definition, against what exists now.
    Plan {
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Apply a definition: slipway creates the VMs and boots them.
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The cluster's phase and every node's (time in phase, deadline, VM, last error).
    Status {
        name: String,
        /// Print again on every change until every node is installed or failed.
        #[arg(long, short = 'w')]
        watch: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change a node group's count: new nodes are made and booted, leaving ones drained,
    /// shut down and deleted with their VMs.
    Scale {
        name: String,
        #[arg(long, short = 'g')]
        group: String,
        #[arg(long)]
        count: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a defined cluster: every node leaves (VMs shut down and deleted unless
    /// --keep-vms), then the cluster and its definition go.
    Delete {
        name: String,
        #[arg(long)]
        keep_vms: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The cluster's add-on sets, in order, with where each stands (pending, applying,
    /// applied, failed) and what it waits for or why it failed.
    Addons {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume every failed node in the phase it failed in, with a fresh deadline.
    Retry {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the cluster's admin kubeconfig (k3s: read from its first server, pointed at the
    /// load balancer); with -f, upload an OKD cluster's (`openshift-install`'s auth/kubeconfig),
    /// which slipway follows the install with.
    Kubeconfig {
        name: String,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Wait until the cluster reaches a stage (`bootstrapping` ... `ready`) or a condition is
    /// True (`installed`, `healthy`, `BootstrapComplete`, ...); fails when the cluster fails or
    /// the timeout passes.
    Wait {
        name: String,
        #[arg(long = "for")]
        until: String,
        /// How long to wait (`30m`, `2h`).
        #[arg(long, default_value = "1h")]
        timeout: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// An OKD cluster's kubelet CSRs: list them with slipway's verdict, approve one by hand.
    Csr {
        #[command(subcommand)]
        action: CsrAction,
    },
    /// An OKD cluster's bootstrap node.
    Bootstrap {
        #[command(subcommand)]
        action: BootstrapAction,
    },
}

#[derive(Subcommand, Debug)]
enum CsrAction {
    /// Every CSR, each pending kubelet CSR with slipway's verdict and why.
    List {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve a pending CSR by name (your decision, whatever slipway's checks say).
    Approve {
        name: String,
        csr: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BootstrapAction {
    /// Remove the bootstrap node now (drained, shut down, deleted); refused until etcd has
    /// removed its bootstrap member, unless --force.
    Remove {
        name: String,
        /// Remove it even before etcd let go of it (can break etcd's quorum).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Read the bootstrap node's bootkube/release-image journal and failed units now, over SSH
    /// (also done when waiting-for-api or bootstrapping fails; kept in the event log).
    Gather {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ImagesAction {
    /// The built-in manifests.
    List,
    /// Download a manifest's files (checked against their sha256; an interrupted download resumes).
    Fetch {
        /// A built-in manifest (`slipway images list`) or a manifest file.
        manifest: String,
        /// The images directory (`[http] images`).
        #[arg(long, default_value = "/var/lib/slipway/images")]
        dir: PathBuf,
        /// The CoreOS stream metadata to use instead of the manifest's (a file or URL), e.g. from
        /// `openshift-install coreos print-stream-json`.
        #[arg(long)]
        stream: Option<String>,
        /// Fetch from a mirror that keeps upstream paths under each host's name, e.g.
        /// `http://mirror:8080/images/` for `.../images/releases.ubuntu.com/24.04/...`.
        #[arg(long)]
        mirror: Option<String>,
    },
}

/// hickory-server logs every query at info level; slipway counts queries in metrics instead, so
/// hickory's own lines are quiet unless the filter names hickory explicitly.
const QUIET_DEPENDENCIES: &str = "hickory_server=warn,hickory_proto=warn,hickory_net=warn";

fn init_logging(format: LogFormat, filter: &str) {
    let full = if filter.contains("hickory") { filter.to_owned() } else { format!("{filter},{QUIET_DEPENDENCIES}") };
    let filter = tracing_subscriber::EnvFilter::try_new(&full).unwrap_or_else(|e| {
        eprintln!("slipway: --log '{filter}' is not a log filter ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

fn target(conn: &Conn) -> client::Target {
    client::Target {
        api: conn.api.clone(),
        token: std::env::var("SLIPWAY_TOKEN").ok().filter(|t| !t.is_empty()),
        token_file: conn.token_file.clone(),
        ca_file: conn.ca_file.clone(),
        config: conn.config.clone(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Check { config } => {
            let (problems, summary) = match config::load(&config) {
                Ok(c) => {
                    let inv = &c.inventory;
                    let summary = format!(
                        "{}: ok ({} networks, {} clusters, {} nodes, {} profiles, {} pools, {} frontends)",
                        config.display(),
                        inv.networks.len(),
                        inv.clusters.len(),
                        inv.nodes.len(),
                        inv.profiles.len(),
                        inv.pools.len(),
                        inv.frontends.len()
                    );
                    (slipway::app::preflight(&c), summary)
                }
                Err(errors) => (errors.0.iter().map(ToString::to_string).collect(), String::new()),
            };
            if problems.is_empty() {
                slipway::outln!("{summary}");
                return ExitCode::SUCCESS;
            }
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem{} found", problems.len(), if problems.len() == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
        Command::Serve { config } => {
            init_logging(args.log_format, &args.log);
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("slipway").build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("slipway: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(slipway::app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("slipway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Get { resource, name, events, conn, output } => {
            client_command(&conn, |c| async move { cli::get(&c, resource, name.as_deref(), output, &events).await })
        }
        Command::Apply { file, api } => {
            client_command(&api.conn, |c| async move { cli::apply(&c, &file, api.output).await })
        }
        Command::Images { action: ImagesAction::List } => {
            cli::images::list();
            ExitCode::SUCCESS
        }
        Command::Images { action: ImagesAction::Fetch { manifest, dir, stream, mirror } } => {
            let args = cli::images::FetchArgs { manifest, dir, stream, mirror };
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| cli::images::ImagesError::Setup(format!("runtime: {e}")))
                .and_then(|rt| rt.block_on(cli::images::run_fetch(&args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("slipway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { pid: Some(pid), .. } => match cli::reload::signal(pid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("slipway: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Reload { pid: None, api } => {
            client_command(&api.conn, |c| async move { cli::reload::reload(&c, api.output).await })
        }
        Command::Status { api } => {
            client_command(&api.conn, |c| async move { cli::status::status(&c, api.output).await })
        }
        Command::Reinstall { node, api } => {
            client_command(&api.conn, |c| async move { cli::boot::reinstall(&c, &node, api.output).await })
        }
        Command::Cluster { action } => {
            match action {
                ClusterAction::Plan { name, file, api } => client_command(&api.conn, |c| async move {
                    cli::cluster::plan(&c, name.as_deref(), file.as_deref(), api.output).await
                }),
                ClusterAction::Apply { file, api } => client_command(&api.conn, |c| async move {
                    cli::cluster::plan_or_apply(&c, &file, true, api.output).await
                }),
                ClusterAction::Status { name, watch, api } => {
                    client_command(
                        &api.conn,
                        |c| async move { cli::cluster::status(&c, &name, watch, api.output).await },
                    )
                }
                ClusterAction::Scale { name, group, count, api } => client_command(&api.conn, |c| async move {
                    cli::cluster::scale(&c, &name, &group, count, api.output).await
                }),
                ClusterAction::Delete { name, keep_vms, api } => {
                    client_command(
                        &api.conn,
                        |c| async move { cli::cluster::delete(&c, &name, keep_vms, api.output).await },
                    )
                }
                ClusterAction::Addons { name, api } => {
                    client_command(&api.conn, |c| async move { cli::cluster::addons(&c, &name, api.output).await })
                }
                ClusterAction::Retry { name, api } => {
                    client_command(&api.conn, |c| async move { cli::cluster::retry(&c, &name, api.output).await })
                }
                ClusterAction::Kubeconfig { name, file: Some(file), api } => {
                    client_command(&api.conn, |c| async move {
                        cli::cluster::kubeconfig(&c, &name, &file, api.output).await
                    })
                }
                ClusterAction::Kubeconfig { name, file: None, api } => {
                    client_command(
                        &api.conn,
                        |c| async move { cli::cluster::print_kubeconfig(&c, &name, api.output).await },
                    )
                }
                ClusterAction::Wait { name, until, timeout, api } => client_command(&api.conn, |c| async move {
                    cli::cluster::wait(&c, &name, &until, &timeout, api.output).await
                }),
                ClusterAction::Csr { action: CsrAction::List { name, api } } => {
                    client_command(&api.conn, |c| async move { cli::cluster::csrs(&c, &name, api.output).await })
                }
                ClusterAction::Csr { action: CsrAction::Approve { name, csr, api } } => {
                    client_command(&api.conn, |c| async move {
                        cli::cluster::approve_csr(&c, &name, &csr, api.output).await
                    })
                }
                ClusterAction::Bootstrap { action: BootstrapAction::Remove { name, force, api } } => {
                    client_command(&api.conn, |c| async move {
                        cli::cluster::remove_bootstrap(&c, &name, force, api.output).await
                    })
                }
                ClusterAction::Bootstrap { action: BootstrapAction::Gather { name, api } } => client_command(
                    &api.conn,
                    |c| async move { cli::cluster::gather_bootstrap(&c, &name, api.output).await },
                ),
            }
        }
        Command::Delete { kind, name, api } => {
            client_command(&api.conn, |c| async move { cli::delete(&c, kind, &name, api.output).await })
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "slipway", &mut script);
            slipway::outln!("{}", String::from_utf8_lossy(&script).trim_end());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => {
            match std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(Args::command(), &dir)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("slipway: man pages into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn client_command<F, Fut>(conn: &Conn, run: F) -> ExitCode
where
    F: FnOnce(client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), client::ClientError>>,
{
    let result = client::Client::new(&target(conn)).and_then(|c| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| client::ClientError::Setup(format!("runtime: {e}")))?;
        runtime.block_on(run(c))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slipway: {e}");
            ExitCode::FAILURE
        }
    }
}
