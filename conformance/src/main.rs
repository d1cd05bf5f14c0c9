//! `conformance`: run the SCIM conformance cases or the load generator against a server.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use conformance::ldap_load::{self, Directory, Query};
use conformance::load::{self, Endpoint};
use conformance::{Target, load_cases, run_case};

#[derive(Parser)]
#[command(
    name = "conformance",
    about = "SCIM conformance cases and load generator (SCIM and LDAP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the conformance cases against a SCIM base URL.
    Run {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        /// Extra variables for cases (readonly_token=…, groups_token=…, me_token=…, me_user_id=…).
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Directory of case files (default: the shipped cases).
        #[arg(long)]
        cases: Option<PathBuf>,
        /// Only cases whose name contains this text.
        #[arg(long)]
        only: Option<String>,
    },
    /// Measure a SCIM or LDAP server.
    #[command(subcommand)]
    Load(LoadCommand),
}

#[derive(Subcommand)]
enum LoadCommand {
    /// Creates per second with concurrent clients (one POST per user).
    Creates {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 5000)]
        users: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// `userName eq` latency at a population (seeds users first, through /Bulk if offered).
    Lookup {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        /// Populations to measure, in increasing order, e.g. 10000,1000000.
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        populations: Vec<u64>,
        #[arg(long, default_value_t = 5000)]
        queries: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Outbound delivery: write-acknowledged → consumer-created latency under steady load.
    Delivery {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        /// The consumer's SCIM base URL (it must be a consumer of the hub already).
        #[arg(long)]
        downstream: String,
        #[arg(long)]
        downstream_token: String,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Creates per second sent to the hub.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Seconds until a consumer holds a given number of Users (a fresh consumer's initial
    /// provisioning).
    WaitFor {
        #[arg(long)]
        downstream: String,
        #[arg(long)]
        downstream_token: String,
        #[arg(long)]
        users: u64,
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Seed users (through /Bulk when offered) without measuring.
    Seed {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        #[arg(long)]
        users: u64,
    },
    /// Cost of adding one member to groups of the given sizes.
    Members {
        #[arg(long)]
        url: String,
        #[arg(long, env = "SCIM_TOKEN")]
        token: String,
        #[arg(long, value_delimiter = ',', default_value = "10,100000")]
        sizes: Vec<u64>,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// LDAP searches per second with concurrent connections, each searching for random
    /// users among those `load seed` creates (the directory must hold them).
    Ldap {
        /// ldap://HOST:PORT
        #[arg(long)]
        url: String,
        #[arg(long)]
        bind_dn: String,
        #[arg(long, env = "LDAP_PASSWORD", hide_env_values = true)]
        password: String,
        /// The subtree searched.
        #[arg(long, default_value = "dc=example,dc=org")]
        base_dn: String,
        /// How many seeded users the directory holds (the uids searched for are among them).
        #[arg(long)]
        users: u64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Length of each measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unmeasured searches before each measurement.
        #[arg(long, default_value_t = 1)]
        warmup_seconds: u64,
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "uid,address-book"
        )]
        queries: Vec<Query>,
    },
    /// Write the users `load seed` creates as inetOrgPerson entries (with the attribute
    /// values scimhub's directory serves for them) in an LDIF file, to load another
    /// directory server with the same entries.
    Ldif {
        #[arg(long)]
        users: u64,
        #[arg(long, default_value = "dc=example,dc=org")]
        base_dn: String,
        #[arg(long)]
        output: PathBuf,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

const PREFIX: &str = "load-";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conformance::install_crypto_provider();
    match Cli::parse().command {
        Command::Run {
            url,
            token,
            vars,
            cases,
            only,
        } => {
            let dir = cases.unwrap_or_else(conformance::default_cases_dir);
            let cases = load_cases(&dir).map_err(anyhow::Error::msg)?;
            let mut all_vars: HashMap<String, String> = vars.into_iter().collect();
            all_vars.insert("token".into(), token);
            let target = Target {
                base_url: url,
                vars: all_vars,
            };
            let client = reqwest::Client::new();
            let (mut passed, mut failed, mut skipped) = (0, 0, 0);
            for (file, case) in &cases {
                if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
                    continue;
                }
                let o = run_case(&client, &target, file, case).await;
                if let Some(why) = &o.skipped {
                    skipped += 1;
                    println!("SKIP {file}: {} ({why})", o.name);
                } else if o.passed() {
                    passed += 1;
                    println!("ok   {file}: {}", o.name);
                } else {
                    failed += 1;
                    println!("FAIL {file}: {}", o.name);
                    for f in &o.failures {
                        println!("       {f}");
                    }
                }
            }
            println!("{passed} passed, {failed} failed, {skipped} skipped");
            if failed > 0 {
                bail!("{failed} case(s) failed");
            }
            Ok(())
        }
        Command::Load(cmd) => run_load(cmd).await,
    }
}

async fn run_load(cmd: LoadCommand) -> anyhow::Result<()> {
    match cmd {
        LoadCommand::Creates {
            url,
            token,
            users,
            concurrency,
        } => {
            let ep = Endpoint::new(&url, &token);
            let prefix = format!(
                "create-{}-",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let stats = load::creates(&ep, &prefix, 0, users, concurrency)
                .await
                .context("creates")?;
            println!(
                "{}",
                stats.line(&format!("creates ({concurrency} clients)"))
            );
        }
        LoadCommand::Lookup {
            url,
            token,
            populations,
            queries,
            concurrency,
        } => {
            let ep = Endpoint::new(&url, &token);
            for n in populations {
                load::seed(&ep, PREFIX, n, 4).await.context("seeding")?;
                // Warm the connection pool and caches before measuring.
                load::lookups(&ep, PREFIX, n, concurrency * 10, concurrency).await?;
                let stats = load::lookups(&ep, PREFIX, n, queries, concurrency)
                    .await
                    .context("lookups")?;
                println!(
                    "{}",
                    stats.line(&format!("userName eq at {n} users ({concurrency} clients)"))
                );
            }
        }
        LoadCommand::Delivery {
            url,
            token,
            downstream,
            downstream_token,
            users,
            rate,
        } => {
            let hub = Endpoint::new(&url, &token);
            let down = Endpoint::new(&downstream, &downstream_token);
            let stats = load::delivery_latency(&hub, &down, users, rate)
                .await
                .context("delivery latency")?;
            println!(
                "write acknowledged -> consumer created, {users} users at {rate}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                stats.p50.as_secs_f64() * 1000.0,
                stats.p99.as_secs_f64() * 1000.0,
                stats.max.as_secs_f64() * 1000.0
            );
        }
        LoadCommand::WaitFor {
            downstream,
            downstream_token,
            users,
            timeout_secs,
        } => {
            let down = Endpoint::new(&downstream, &downstream_token);
            let took = load::wait_for_population(
                &down,
                users,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await?;
            println!(
                "consumer holds {users} users after {:.1} s ({:.0} users/s)",
                took.as_secs_f64(),
                users as f64 / took.as_secs_f64()
            );
        }
        LoadCommand::Seed { url, token, users } => {
            let ep = Endpoint::new(&url, &token);
            load::seed(&ep, PREFIX, users, 4).await.context("seeding")?;
        }
        LoadCommand::Members {
            url,
            token,
            sizes,
            samples,
        } => {
            let ep = Endpoint::new(&url, &token);
            let need = sizes.iter().max().copied().unwrap_or(0) + samples as u64;
            load::seed(&ep, PREFIX, need, 4).await.context("seeding")?;
            for size in sizes {
                let stats = load::member_add(&ep, PREFIX, size, samples)
                    .await
                    .context("member benchmark")?;
                println!(
                    "{}",
                    stats.line(&format!("add one member to a {size}-member group"))
                );
            }
        }
        LoadCommand::Ldap {
            url,
            bind_dn,
            password,
            base_dn,
            users,
            connections,
            seconds,
            warmup_seconds,
            queries,
        } => {
            let dir = Directory {
                url,
                bind_dn,
                password,
                base_dn,
            };
            ldap_load::check_population(&dir, PREFIX, users)
                .await
                .context(dir.url.clone())?;
            let mut failed = 0;
            for q in queries {
                let r = ldap_load::searches(
                    &dir,
                    q,
                    PREFIX,
                    users,
                    connections,
                    std::time::Duration::from_secs(warmup_seconds),
                    std::time::Duration::from_secs(seconds),
                )
                .await
                .with_context(|| format!("{} against {}", q.label(), dir.url))?;
                println!(
                    "{}; errors {}",
                    r.stats.line(&format!(
                        "{} at {users} users ({connections} connections)",
                        q.label()
                    )),
                    r.errors
                );
                if let Some(e) = r.first_error {
                    eprintln!("  first error: {e}");
                    failed += r.errors;
                }
            }
            if failed > 0 {
                bail!("{failed} search(es) failed or answered wrongly");
            }
        }
        LoadCommand::Ldif {
            users,
            base_dn,
            output,
        } => {
            let file = std::fs::File::create(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            ldap_load::write_ldif(&mut std::io::BufWriter::new(file), PREFIX, users, &base_dn)
                .with_context(|| format!("writing {}", output.display()))?;
        }
    }
    Ok(())
}
