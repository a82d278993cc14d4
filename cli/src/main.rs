//! `weft`: the Weft command line — the CA, the mesh's status, the playground and the benchmark.
#![forbid(unsafe_code)]

mod ca;
mod check;
mod http_get;
mod kubernetes;
mod playground;
mod prom;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "The Weft service mesh command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The mesh's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Measure the mesh's overhead against no proxy, a bare TLS relay, Envoy and linkerd2-proxy.
    Bench(weft_bench::cli::BenchArgs),
    /// The mesh to learn from: demo services, sidecars, a controller and load, as local processes.
    Playground(playground::PlaygroundArgs),
    /// Send steady load to a URL and print a line per second (the playground's load generator).
    Load(playground::LoadArgs),
    /// Add the Weft sidecar to the pod templates of Kubernetes YAML (stdout: the YAML; stderr: what was done).
    Inject(Box<kubernetes::InjectArgs>),
    /// Remove what `weft inject` (or the webhook) added.
    Uninject(kubernetes::UninjectArgs),
    /// Print the control plane's Kubernetes manifests: weft install | kubectl apply -f -
    Install(Box<kubernetes::InstallArgs>),
    /// Check the install: controller live and ready, trust anchor expiry, config rejected or not,
    /// policy findings, proxies and their certificates; with a kubeconfig, the CRDs, the webhook
    /// and the controller's replicas in the cluster. Exit code 0 when no check failed.
    Check(check::CheckArgs),
    /// The mesh at a glance: services, endpoints, proxies, config versions, certificate expiries.
    Status {
        /// The controller's admin address.
        #[arg(long, env = "WEFT_CONTROLLER_ADMIN", default_value = "http://127.0.0.1:7071")]
        controller_admin: String,
        /// Print the raw JSON state.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a new root CA (ca.crt, ca.key) for a trust domain.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "weft.local")]
        trust_domain: String,
    },
    /// Create the CA if it is missing, and a join token file per service (for containers:
    /// DIR/ca.crt, DIR/ca.key, DIR/tokens/SERVICE.token).
    Bootstrap {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "weft.local")]
        trust_domain: String,
        /// Services to write tokens for (comma-separated).
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// How long the tokens may be used for first certificates.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// UID:GID to own the token files (mode 0600), for proxies that run as another user.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a join token: controllers refuse its first certificates and renewals and close its
    /// proxies' streams (certificates already issued stay valid until they expire, --cert-ttl).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        /// The token's id (printed by `weft ca token` on stderr).
        #[arg(long)]
        token_id: Option<String>,
        /// Or the token itself, in a file.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Why, recorded in the revocation list.
        #[arg(long, default_value = "revoked by weft ca revoke")]
        reason: String,
    },
    /// Print a join token that lets a proxy claim exactly one identity.
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// How long the token may be used for a first certificate.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// Only a proxy with this --instance may register with it, one stream at a time.
        #[arg(long)]
        bind_instance: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => return check::main(args),
        Command::Ca(CaCommand::Init { dir, trust_domain }) => ca::init(&dir, &trust_domain),
        Command::Ca(CaCommand::Token { dir, service, namespace, ttl, bind_instance }) => {
            ca::token(&dir, &service, &namespace, &ttl, bind_instance.as_deref())
        }
        Command::Ca(CaCommand::Bootstrap { dir, trust_domain, services, namespace, ttl, owner }) => owner
            .as_deref()
            .map(ca::parse_owner)
            .transpose()
            .and_then(|owner| ca::bootstrap(&dir, &trust_domain, &services, &namespace, &ttl, owner)),
        Command::Ca(CaCommand::Revoke { dir, token_id, token_file, reason }) => {
            ca::revoke(&dir, token_id.as_deref(), token_file.as_deref(), &reason)
        }
        Command::Load(args) => playground::load_command(args),
        Command::Status { controller_admin, json } => status::run(&controller_admin, json),
        Command::Bench(args) => weft_bench::cli::run(args),
        Command::Playground(args) => playground::run(args),
        Command::Inject(args) => kubernetes::inject(*args),
        Command::Uninject(args) => kubernetes::uninject(args),
        Command::Install(args) => kubernetes::install(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
