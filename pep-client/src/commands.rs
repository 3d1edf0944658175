//! What each command does.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{IdentityRequest, Order, PepApi, RequestKey, TlsOptions, Token};
use crate::cli::{
    Command, ExportFormat, GetOneIdentity, GlobalArgs, IdentityOptions, ListEnrollmentIds,
    Provision,
};
use crate::error::{CliError, LostAnswer};
use crate::fcc::FccChild;
use crate::files::{IDENTITY_FILE, InstallPlan, write_atomic};
use crate::retry::{AfterRetry, RetryPolicy, after_retry, answer_lost};
use crate::serial::validate_serial;

/// The environment variable holding the API token (when `--token-file` is not given).
pub const TOKEN_ENV: &str = "PEP_API_TOKEN";

/// Runs one command.
pub async fn run(global: &GlobalArgs, command: Command) -> Result<(), CliError> {
    // Completions and man pages need no server URL, token or CA certificate.
    if let Command::Docs(docs) = &command {
        return crate::completions::run(docs);
    }
    let tls = TlsOptions {
        ca_certs: global.ca_cert.clone(),
        ca_cert_only: global.ca_cert_only,
        client_cert: global.client_cert.clone(),
        client_key: global.client_key.clone(),
    };
    let api = PepApi::with_tls(
        &global.server,
        token(global)?,
        Duration::from_secs(global.http_timeout),
        &tls,
    )?;
    match command {
        Command::GetOneIdentity(args) => get_one_identity(&api, args).await,
        Command::GetEnrollmentId(args) => {
            let serial = validate_serial(&args.serial)?;
            print_line(&api.enrollment_id(&serial).await?)
        }
        Command::GetVerificationKey(args) => {
            let serial = validate_serial(&args.serial)?;
            print_line(&api.verification_key(&serial).await?)
        }
        Command::ListEnrollmentIds(args) => list_enrollment_ids(&api, args).await,
        Command::Provision(args) => provision(&api, args).await,
        Command::Revoke(args) => {
            let serial = validate_serial(&args.serial)?;
            let answer = api
                .revoke(&serial, args.reason, args.note.as_deref())
                .await?;
            print_line(&format!(
                "{serial} revoked ({}): certificate {} is in the CRL; enrollment ID {} is in \
                 GET /v3/enrollment-ids.csv?state=revoked",
                args.reason,
                answer["certificateSerial"].as_str().unwrap_or("-"),
                answer["enrollmentID"].as_str().unwrap_or("-"),
            ))
        }
        Command::Docs(docs) => crate::completions::run(&docs),
    }
}

/// The API token: `--token-file`, else `$PEP_API_TOKEN`, else none (the server will answer 401).
fn token(global: &GlobalArgs) -> Result<Option<Token>, CliError> {
    if let Some(path) = &global.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::Token {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        return Token::new(&text).map(Some).ok_or_else(|| CliError::Token {
            path: path.clone(),
            reason: "the file is empty".to_owned(),
        });
    }
    let token = std::env::var(TOKEN_ENV).ok().and_then(|t| Token::new(&t));
    if token.is_none() {
        tracing::debug!("no API token (neither --token-file nor {TOKEN_ENV})");
    }
    Ok(token)
}

fn print_line(text: &str) -> Result<(), CliError> {
    write_stdout(format!("{text}\n").as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("cannot write to stdout", e))
}

/// Builds the identity request; with `-k` generates the FSS key first (failing before any request).
/// Only the options the user gave are set; the server's configuration decides the rest.
async fn identity_request(
    serial: String,
    ip: IpAddr,
    port: u16,
    o: &IdentityOptions,
    request_id: Option<RequestKey>,
) -> Result<IdentityRequest, CliError> {
    let verification_key = if o.setup_fss {
        let program = crate::fss::journalctl_program();
        Some(crate::fss::generate_verification_key(&program, &o.fss_interval).await?)
    } else {
        None
    };
    Ok(IdentityRequest {
        serial_number: serial,
        ip,
        port,
        api_address: o.api_url.clone(),
        gateway_services_address: o.gw_url.clone(),
        hardware_version: o.hardware_version.clone(),
        radio_config: o.radio_config.clone(),
        led_config: o.led_config.clone(),
        category: o.category.clone(),
        verification_key,
        request_id,
    })
}

/// `get-one-identity`: writes `./identity.json` (only on success, atomically) and prints it.
async fn get_one_identity(api: &PepApi, args: GetOneIdentity) -> Result<(), CliError> {
    let serial = validate_serial(&args.serial)?;
    let req = identity_request(
        serial,
        args.ip,
        args.port,
        &args.identity,
        args.request_id.clone(),
    )
    .await?;
    let answer = api.identity(&req, "get-one-identity").await?;
    write_atomic(Path::new(IDENTITY_FILE), &answer.body)?;
    write_stdout(&answer.body)
}

/// `OUTPUT` + `.ext`, as the old tool named its files (`-f out` → `out.json`).
fn with_ext(output: &Path, ext: &str) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// `list-enrollment-ids`: one page (or, with `--all`, every page) to OUTPUT.json and OUTPUT.csv.
async fn list_enrollment_ids(api: &PepApi, args: ListEnrollmentIds) -> Result<(), CliError> {
    let limit = args.limit.unwrap_or(if args.all { 1000 } else { 50 });
    let order = args
        .order
        .unwrap_or(if args.all { Order::Asc } else { Order::Desc });
    let first = api.enrollment_ids_url(limit, order, args.last.as_deref())?;
    let json_path = with_ext(&args.output, "json");
    let csv_path = with_ext(&args.output, "csv");

    let (json, results) = if args.all {
        let results = fetch_all(api, first).await?;
        let json = all_json(&results, order)?;
        (json, results)
    } else {
        let page = api.enrollment_ids_page(first).await?;
        (page.body, page.results)
    };
    write_atomic(&json_path, &json)?;
    print_line(&format!(
        "JSON output saved successfully at {}",
        json_path.display()
    ))?;
    if let Some(summary) = claim_summary(&results) {
        print_line(&summary)?;
    }
    if args.export == Some(ExportFormat::Csv) {
        let doc = crate::csv::document(&results).map_err(|detail| CliError::BadAnswer {
            what: "list-enrollment-ids".to_owned(),
            detail,
        })?;
        write_atomic(&csv_path, doc.as_bytes())?;
        print_line(&format!(
            "CSV output saved successfully at {}",
            csv_path.display()
        ))?;
    }
    Ok(())
}

/// The cloud claim states of the listed gateways (each entry's `claimState`, present when the
/// server claims them in the device-management cloud): "cloud claims: 3 claimed, 1 pending".
/// `None` when no entry has one.
fn claim_summary(results: &[serde_json::Value]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for entry in results {
        if let Some(state) = entry.get("claimState").and_then(serde_json::Value::as_str) {
            *counts.entry(state).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return None;
    }
    let unclaimed = results.len() - counts.values().sum::<usize>();
    let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    if unclaimed > 0 {
        parts.push(format!("{unclaimed} not queued"));
    }
    Some(format!("cloud claims: {}", parts.join(", ")))
}

/// Follows the `next` links from `first` until an empty page (or no link).
async fn fetch_all(api: &PepApi, first: url::Url) -> Result<Vec<serde_json::Value>, CliError> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {pos} gateways exported ({per_sec})")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        if !seen.insert(url.to_string()) {
            bar.abandon();
            return Err(CliError::BadAnswer {
                what: "list-enrollment-ids --all".to_owned(),
                detail: format!("the next link loops back to {url}"),
            });
        }
        let page = match api.enrollment_ids_page(url).await {
            Ok(p) => p,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        if page.results.is_empty() {
            break;
        }
        bar.inc(page.results.len() as u64);
        all.extend(page.results);
        next = page.next;
    }
    bar.finish_and_clear();
    tracing::debug!(
        entries = all.len(),
        pages = seen.len(),
        "exported the whole inventory"
    );
    Ok(all)
}

/// The JSON document of an `--all` export.
fn all_json(results: &[serde_json::Value], order: Order) -> Result<Vec<u8>, CliError> {
    let doc = serde_json::json!({
        "total_count": results.len(),
        "order": order.as_str(),
        "results": results,
    });
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| CliError::io("cannot encode the export", std::io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// FCC's working directory: a temporary directory, removed when `provision` ends, until an answer
/// is lost; from then on kept (also through SIGINT or a crash), because its `pal/` may hold an
/// identity the server recorded.
#[derive(Debug)]
enum Staging {
    /// Removed when dropped.
    Temp(tempfile::TempDir),
    /// Survives the process.
    Kept(PathBuf),
}

impl Staging {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }

    /// Keeps the directory past the end of the process; its path.
    fn keep(&mut self) -> PathBuf {
        if matches!(self, Self::Temp(_))
            && let Self::Temp(dir) = std::mem::replace(self, Self::Kept(PathBuf::new()))
        {
            *self = Self::Kept(dir.keep());
        }
        self.path().to_path_buf()
    }

    /// Removes what is left after a successful install.
    fn remove(self) {
        if let Self::Kept(path) = self
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), "cannot remove the staging directory: {e}");
        }
    }
}

/// The note left in a kept staging directory, for whoever finds it.
const LOST_ANSWER_NOTE: &str = "pep-cli-lost-answer.txt";

/// Steps 1–3 of `provision` with FCC running: its address, the identity (recovered with the same
/// request key if its answer is lost), FCC's exit status 0.
async fn inject(
    api: &PepApi,
    fcc: &mut FccChild,
    req: &mut IdentityRequest,
    args: &Provision,
    staging: &mut Staging,
) -> Result<crate::api::IdentityAnswer, CliError> {
    let addr = fcc.address(Duration::from_secs(args.fcc_timeout)).await?;
    req.ip = addr.ip();
    req.port = addr.port();
    tracing::debug!(serial = %req.serial_number, %addr, "requesting the identity");
    let answer = match api.identity(req, "provision").await {
        Ok(answer) => answer,
        Err(lost) if answer_lost(&lost) => recover(api, fcc, req, args, staging, lost).await?,
        Err(e) => return Err(e),
    };
    fcc.wait_success(Duration::from_secs(args.fcc_exit_timeout))
        .await
        .map_err(|e| match e {
            CliError::Fcc(msg) => {
                let kept = match staging {
                    Staging::Kept(path) => format!("; FCC's results are kept in {}", path.display()),
                    Staging::Temp(_) => String::new(),
                };
                CliError::Fcc(format!(
                    "{msg}; the server recorded {} as enrollment ID {} but nothing was installed{kept}",
                    req.serial_number, answer.enrollment_id
                ))
            }
            other => other,
        })?;
    Ok(answer)
}

/// The identity answer was lost: the server may have provisioned the gateway. Keeps the staging
/// directory, then asks again with the same request key (backing off) until the server answers
/// the identity, gives an answer another try cannot change, or the tries run out. Not recovered:
/// waits for FCC to finish what it got, and fails with [`CliError::AnswerLost`].
async fn recover(
    api: &PepApi,
    fcc: &mut FccChild,
    req: &IdentityRequest,
    args: &Provision,
    staging: &mut Staging,
    lost: CliError,
) -> Result<crate::api::IdentityAnswer, CliError> {
    let serial = &req.serial_number;
    let key = req
        .request_id
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), ToString::to_string);
    let dir = staging.keep();
    let note = format!(
        "The answer to `pep-cli provision` for serial {serial} was lost: {lost}\n\
         request key: {key}\nserver: {}\n\
         FCC's results (pal/) are kept here until the outcome is known; see \"Lost answers\" in docs/pep-cli.md.\n",
        api.base()
    );
    if let Err(e) = write_atomic(&dir.join(LOST_ANSWER_NOTE), note.as_bytes()) {
        tracing::warn!("cannot write the lost-answer note: {e}");
    }
    let policy = RetryPolicy::new(
        args.answer_retries,
        Duration::from_millis(args.answer_retry_delay),
    );
    eprintln!(
        "pep-cli: {lost}; keeping FCC's results in {} and asking again for serial {serial} with request key {key} (up to {} times)",
        dir.display(),
        policy.retries
    );
    let mut last = "no new try was made (--answer-retries 0)".to_owned();
    for n in 0..policy.retries {
        tokio::time::sleep(policy.delay(n)).await;
        tracing::debug!(try_ = n + 1, "asking again after a lost answer");
        match api.identity(req, "provision").await {
            Ok(answer) => {
                tracing::debug!(enrollment_id = %answer.enrollment_id, "recovered the lost answer");
                return Ok(answer);
            }
            Err(e) => {
                let next = after_retry(&e);
                last = format!("try {} of {}: {e}", n + 1, policy.retries);
                if next == AfterRetry::Stop {
                    break;
                }
            }
        }
    }
    // FCC may still be storing the identity: its pal/ is what we keep, so let it finish.
    let fcc_end = match fcc
        .wait_success(Duration::from_secs(args.fcc_exit_timeout))
        .await
    {
        Ok(()) => "FCC exited with status 0".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(CliError::AnswerLost(Box::new(LostAnswer {
        serial: serial.clone(),
        request_key: key,
        lost: lost.to_string(),
        last,
        staging: dir,
        fcc: fcc_end,
    })))
}

/// `provision`: FCC child → address → identity from the server → FCC exit 0 → install.
async fn provision(api: &PepApi, args: Provision) -> Result<(), CliError> {
    let serial = match (&args.serial, &args.serial_from) {
        (Some(s), _) => s.clone(),
        (None, Some(source)) => source.read()?,
        (None, None) => {
            return Err(CliError::Usage("give --serial or --serial-from".to_owned()));
        }
    };
    let serial = validate_serial(&serial)?;
    let plan = match (args.install, &args.pal_dest, &args.identity_dest) {
        (true, Some(pal), Some(identity)) => InstallPlan {
            pal_dest: pal.clone(),
            identity_dir: identity.clone(),
            force: args.force,
        },
        (true, _, _) => {
            return Err(CliError::Usage(
                "--install needs --pal-dest and --identity-dest".to_owned(),
            ));
        }
        // Without --install the results land where the old manual flow had them: ./pal and
        // ./identity.json, under the same no-overwrite rules.
        (false, _, _) => InstallPlan {
            pal_dest: PathBuf::from("pal"),
            identity_dir: PathBuf::from("."),
            force: args.force,
        },
    };
    // Refuse before FCC runs and before the server spends a serial on us.
    plan.preflight()?;

    // -k: generate the key before FCC starts; a failure stops here.
    // The address is FCC's, known once it runs; unspecified until then.
    // A fresh key per run: a lost answer is asked for again with it (and only with it).
    let mut req = identity_request(
        serial.clone(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
        &args.identity,
        Some(RequestKey::random()?),
    )
    .await?;

    let workdir = tempfile::Builder::new()
        .prefix(".pep-fcc-")
        .tempdir_in(plan.staging_dir())
        .map_err(|e| {
            CliError::io(
                format!(
                    "cannot create the FCC working directory in {}",
                    plan.staging_dir().display()
                ),
                e,
            )
        })?;
    let mut staging = Staging::Temp(workdir);
    let mut fcc = FccChild::spawn(&args.fcc, &args.fcc_args, staging.path())?;
    let outcome = inject(api, &mut fcc, &mut req, &args, &mut staging).await;
    // Kill FCC and wait for it before the working directory is removed, so that a dying FCC
    // cannot write into it afterwards.
    fcc.shutdown().await;
    let answer = outcome?;

    let installed = plan.install(&staging.path().join("pal"), &answer.body)?;
    staging.remove();
    let mut summary = format!(
        "Provisioned gateway {serial}\nEnrollment ID: {}\npal: {}\nidentity.json: {}\n",
        answer.enrollment_id,
        installed.pal.display(),
        installed.identity.display()
    );
    for (from, to) in &installed.moved_aside {
        summary.push_str(&format!(
            "moved aside: {} -> {}\n",
            from.display(),
            to.display()
        ));
    }
    write_stdout(summary.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_states_are_summed_up() {
        let entries = [
            serde_json::json!({"claimState": "claimed"}),
            serde_json::json!({"claimState": "claimed"}),
            serde_json::json!({"claimState": "rejected"}),
            serde_json::json!({}),
        ];
        assert_eq!(
            claim_summary(&entries).as_deref(),
            Some("cloud claims: 2 claimed, 1 rejected, 1 not queued")
        );
        assert_eq!(claim_summary(&entries[3..]), None);
    }

    #[test]
    fn output_names_follow_the_old_tool() {
        assert_eq!(
            with_ext(Path::new("enrollment_ids_list"), "json"),
            PathBuf::from("enrollment_ids_list.json")
        );
        assert_eq!(
            with_ext(Path::new("/tmp/x.v1"), "csv"),
            PathBuf::from("/tmp/x.v1.csv")
        );
    }

    #[test]
    fn all_export_counts_entries() {
        let results = vec![serde_json::json!({"enrollmentID": "A-1"})];
        let bytes = all_json(&results, Order::Asc).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["total_count"], 1);
        assert_eq!(v["order"], "ASC");
        assert_eq!(v["results"][0]["enrollmentID"], "A-1");
    }
}
