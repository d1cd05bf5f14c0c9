//! The operations commands: `audit verify|head|rekey|export|prune`, `import`, `export`.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use scim_server::admin::audit::{AuditParams, ExportFormat, export_to, filter_from};
use scim_server::batch::{self, ImportOptions, InputFormat, MappingFile, Progress};
use scim_server::config::Config;
use scim_server::ops::{Metrics, retention};
use scim_server::server;
use store::Actor;

#[derive(Args)]
pub struct AuditExportArgs {
    /// csv or jsonl.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// From this time on (RFC 3339 or YYYY-MM-DD), inclusive.
    #[arg(long)]
    since: Option<String>,
    /// Before this time, exclusive.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    actor: Option<String>,
    /// A resource id, or Users/ID, Groups/ID.
    #[arg(long)]
    resource: Option<String>,
    #[arg(long)]
    consumer: Option<String>,
    /// An action (user.create), or a prefix ending in * (auth.*).
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long)]
    layer: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
pub struct AuditVerifyArgs {
    /// A head exported earlier (`scimhub audit head`, or the hub's "audit chain head" log
    /// line): the chain must still contain that row with that hash. Repeatable.
    #[arg(long = "head", value_name = "SEQ:HASH")]
    heads: Vec<store::ChainHead>,
}

#[derive(Args)]
pub struct AuditPruneArgs {
    /// Delete rows older than this many days (default: audit.retention_days).
    #[arg(long)]
    days: Option<u64>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// CSV (with a header line), LDIF, or JSON Lines of SCIM Users.
    file: PathBuf,
    /// csv, ldif or jsonl (default: from the file name).
    #[arg(long)]
    format: Option<String>,
    /// Column mapping (JSON or TOML): column → SCIM path; for LDIF, LDAP attribute → path.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Validate and report without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Rows imported concurrently (default: 1 on SQLite, 4 on PostgreSQL).
    #[arg(long)]
    jobs: Option<usize>,
    /// Write the report of failed rows here instead of stdout.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// csv, ldif or json (JSON Lines of SCIM resources).
    #[arg(long, default_value = "json")]
    format: String,
    /// users, groups or all (CSV: users).
    #[arg(long = "type", default_value = "users")]
    kinds: String,
    /// CSV columns (JSON or TOML: column → SCIM path, in order).
    #[arg(long)]
    mapping: Option<PathBuf>,
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn output(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

pub async fn audit_export(cfg: &Config, a: AuditExportArgs) -> anyhow::Result<()> {
    let format = ExportFormat::parse(&a.format)
        .with_context(|| format!("--format {:?}: csv or jsonl", a.format))?;
    let filter = filter_from(&AuditParams {
        since: a.since,
        until: a.until,
        actor: a.actor,
        resource: a.resource,
        consumer: a.consumer,
        action: a.action,
        outcome: a.outcome,
        layer: a.layer,
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let mut out = output(&a.output)?;
    let n = export_to(&store, &filter, format, &mut out).await;
    out.flush()?;
    store.close().await;
    eprintln!("exported {} audit rows", n?);
    Ok(())
}

/// `audit verify`: exits 0 with a summary on stdout when every check passes, else 1 with
/// the fault on stderr.
pub async fn audit_verify(cfg: &Config, a: AuditVerifyArgs) -> anyhow::Result<()> {
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let report = store.verify_audit_chain_against(&a.heads).await;
    store.close().await;
    let report = report?;
    if !report.intact {
        let reason = report.reason.unwrap_or_default();
        match report.first_broken {
            Some(seq) => bail!("audit chain broken at row {seq}: {reason}"),
            None => bail!("audit chain broken: {reason}"),
        }
    }
    let keyed = match report.keyed_rows {
        0 => String::new(),
        k => format!(" ({k} keyed)"),
    };
    match report.anchored_after {
        Some(seq) => println!(
            "audit chain intact: {} rows verified{keyed} from the retention anchor (rows up to {seq} were pruned)",
            report.rows
        ),
        None => println!("audit chain intact: {} rows verified{keyed}", report.rows),
    }
    if !a.heads.is_empty() {
        println!(
            "exported heads found: {} of {}",
            report.heads_checked,
            a.heads.len()
        );
    }
    if let Some(h) = report.head {
        println!("head {h}");
    }
    Ok(())
}

/// `audit head`: the newest row as `SEQ:HASH` on stdout.
pub async fn audit_head(cfg: &Config) -> anyhow::Result<()> {
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let head = store.audit_head().await;
    store.close().await;
    match head? {
        Some(h) => println!("{h}"),
        None => bail!("the audit trail has no rows yet"),
    }
    Ok(())
}

/// `audit rekey`: switches the chain to the configured key (or to none).
pub async fn audit_rekey(cfg: &Config) -> anyhow::Result<()> {
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let r = store.rekey_audit_chain(&Actor::cli()).await;
    store.close().await;
    let r = r?;
    match r.head {
        Some(h) => println!(
            "audit chain switched from {} to {} after verifying {} rows; head {h}",
            r.from, r.to, r.rows_verified
        ),
        None => println!(
            "the audit chain is already hashed {}; nothing to switch",
            r.to
        ),
    }
    Ok(())
}

pub async fn audit_prune(cfg: &Config, a: AuditPruneArgs) -> anyhow::Result<()> {
    let days = a.days.unwrap_or(cfg.audit.retention_days);
    if days == 0 {
        bail!("no retention: give --days N or set audit.retention_days");
    }
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let r = retention::run_once(
        &store,
        &Metrics::new(),
        Duration::from_secs(days * 86_400),
        &Actor::cli(),
    )
    .await;
    store.close().await;
    let r = r?;
    match r.through_seq {
        Some(seq) => eprintln!(
            "pruned {} audit rows (through row {seq}); the chain now verifies from there",
            r.rows
        ),
        None => eprintln!("no audit rows older than {days} days"),
    }
    Ok(())
}

fn mapping(path: &Option<PathBuf>) -> anyhow::Result<Option<MappingFile>> {
    path.as_deref()
        .map(MappingFile::load)
        .transpose()
        .map_err(anyhow::Error::msg)
}

pub async fn import(cfg: &Config, a: ImportArgs) -> anyhow::Result<()> {
    let format = match &a.format {
        Some(f) => {
            InputFormat::parse(f).with_context(|| format!("--format {f:?}: csv, ldif or jsonl"))?
        }
        None => InputFormat::of_path(&a.file).with_context(|| {
            format!(
                "{}: cannot tell the format from the name; give --format csv|ldif|jsonl",
                a.file.display()
            )
        })?,
    };
    let mapping = mapping(&a.mapping)?;
    let file =
        std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let source = batch::source(
        BufReader::with_capacity(1 << 16, file),
        format,
        store.registry(),
        mapping.as_ref(),
        &cfg.ldap,
    )
    .with_context(|| format!("{}", a.file.display()))?;
    let jobs = a.jobs.unwrap_or(if store.backend_name() == "postgresql" {
        4
    } else {
        1
    });
    let opts = ImportOptions {
        dry_run: a.dry_run,
        jobs,
        actor: Actor::new(format!("cli:import:{}", a.file.display()), None, "cli"),
    };
    let mut progress = if a.quiet {
        Progress::quiet()
    } else {
        Progress::stderr(size)
    };
    let report = batch::import(&store, source, opts, &mut progress).await;
    store.close().await;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    let mut out = output(&a.report)?;
    out.write_all(report.error_lines().as_bytes())?;
    out.flush()?;
    eprintln!("import: {}", report.summary_line());
    if report.summary.failed > 0 {
        bail!(
            "{} rows were not imported (listed {})",
            report.summary.failed,
            match &a.report {
                Some(p) => format!("in {}", p.display()),
                None => "above".into(),
            }
        );
    }
    Ok(())
}

pub async fn export(cfg: &Config, a: ExportArgs) -> anyhow::Result<()> {
    let format = batch::export::Format::parse(&a.format)
        .with_context(|| format!("--format {:?}: csv, ldif or json", a.format))?;
    let kinds = batch::export::Kinds::parse(&a.kinds)
        .with_context(|| format!("--type {:?}: users, groups or all", a.kinds))?;
    let opts = batch::export::ExportOptions {
        format,
        kinds,
        mapping: mapping(&a.mapping)?,
        base_url: cfg.server.public_url.trim_end_matches('/').to_string(),
        ldap: cfg.ldap.clone(),
    };
    let store = server::open_store(cfg)
        .await
        .context("opening the database")?;
    let mut out = output(&a.output)?;
    let n = batch::export::export(&store, &opts, &mut out).await;
    out.flush()?;
    store.close().await;
    eprintln!("exported {} resources", n?);
    Ok(())
}
