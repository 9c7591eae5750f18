//! Policy test files (`*.test.yaml`) and their runner, `verdict test`: each case is a token's claims
//! and a request with the decision expected of the policies, like `opa test` for Rego.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{OfflineDecider, Scenario, load_policies};
use crate::config::ClaimNames;
use crate::decision::{Decision, ErrorCode};
use crate::fronts::service_callout::DecideRequest;

/// The file names a test file has.
const TEST_FILE_SUFFIXES: [&str; 2] = [".test.yaml", ".test.yml"];

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The policy directory, relative to the file; the file's own directory when absent.
    policies: Option<PathBuf>,
    /// A Cedar schema to validate the policies against first, relative to the file.
    schema: Option<PathBuf>,
    /// How tokens are read, as an issuer's `claims:` in the configuration.
    #[serde(default)]
    claims: ClaimNames,
    cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    token: Map<String, Value>,
    request: DecideRequest,
    time: Option<String>,
    expect: Expectation,
}

/// What a case expects; each field left out is not checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    allow: bool,
    status: Option<u16>,
    error: Option<String>,
    /// The `scope` of the deny's challenge.
    scope: Option<String>,
    /// The determining policies, in any order.
    policies: Option<BTreeSet<String>>,
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub passed: usize,
    pub failed: usize,
    /// Files that could not run: unreadable, malformed, or with policies that do not load.
    pub broken_files: usize,
}

impl Summary {
    pub fn succeeded(&self) -> bool {
        self.failed == 0 && self.broken_files == 0 && self.passed > 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} file(s), {} case(s): {} passed, {} failed",
            self.files,
            self.passed + self.failed,
            self.passed,
            self.failed
        )?;
        if self.broken_files > 0 {
            write!(f, ", {} file(s) could not run", self.broken_files)?;
        }
        Ok(())
    }
}

/// Runs every test file under `root` (or `root` itself, if it is a file), writing a report to `out`.
pub fn run(root: &Path, out: &mut dyn fmt::Write) -> Result<Summary, String> {
    let files = find_test_files(root)?;
    if files.is_empty() {
        return Err(format!(
            "no test files (`*{}`) under `{}`",
            TEST_FILE_SUFFIXES[0],
            root.display()
        ));
    }
    let mut summary = Summary::default();
    for file in &files {
        summary.files += 1;
        let _ = writeln!(out, "{}", file.display());
        match run_file(file, out) {
            Ok((passed, failed)) => {
                summary.passed += passed;
                summary.failed += failed;
            }
            Err(problem) => {
                summary.broken_files += 1;
                for line in problem.lines() {
                    let _ = writeln!(out, "  ERROR {line}");
                }
            }
        }
    }
    let _ = writeln!(out, "\n{summary}");
    Ok(summary)
}

/// Runs one file's cases; `Err` when the file cannot run at all.
fn run_file(path: &Path, out: &mut dyn fmt::Write) -> Result<(usize, usize), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
    let file: TestFile = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(
        &text,
    ))
    .map_err(|error| match error.path().to_string().as_str() {
        "." => error.into_inner().to_string(),
        at => format!("{at}: {}", error.into_inner()),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let directory = file
        .policies
        .as_deref()
        .map_or_else(|| base.to_path_buf(), |policies| base.join(policies));
    let schema = file.schema.as_deref().map(|schema| base.join(schema));
    let policies = load_policies(&directory, schema.as_deref())?;
    if file.cases.is_empty() {
        return Err("`cases` is empty".to_owned());
    }
    for (index, case) in file.cases.iter().enumerate() {
        if let Some(error) = &case.expect.error
            && !ErrorCode::ALL.iter().any(|code| code.as_str() == error)
        {
            let known: Vec<String> = ErrorCode::ALL
                .iter()
                .map(|code| format!("`{}`", code.as_str()))
                .collect();
            return Err(format!(
                "cases[{index}].expect.error: unknown error `{error}`; expected one of {}",
                known.join(", ")
            ));
        }
    }
    let decider = OfflineDecider::new(policies, file.claims);

    let (mut passed, mut failed) = (0, 0);
    for (index, case) in file.cases.into_iter().enumerate() {
        let name = case.name;
        let expect = case.expect;
        let result = decider.decide(Scenario {
            token: case.token,
            request: case.request,
            time: case.time,
        });
        let problems = match &result {
            Ok(decision) => expect.mismatches(decision),
            Err(problem) => vec![format!("cannot decide: cases[{index}].{problem}")],
        };
        if problems.is_empty() {
            passed += 1;
            let _ = writeln!(out, "  ok    {name}");
            continue;
        }
        failed += 1;
        let _ = writeln!(out, "  FAIL  {name}");
        for problem in problems {
            let _ = writeln!(out, "        {problem}");
        }
        if let Ok(decision) = &result {
            let _ = writeln!(out, "        got: {}", describe(decision));
            for error in &decision.trace.policy_errors {
                let _ = writeln!(out, "        policy error: {error}");
            }
        }
    }
    Ok((passed, failed))
}

impl Expectation {
    /// How `decision` differs from what was expected, one line per difference.
    fn mismatches(&self, decision: &Decision) -> Vec<String> {
        let mut problems = Vec::new();
        if decision.allow != self.allow {
            problems.push(format!(
                "expected {}, got {}",
                verdict(self.allow),
                verdict(decision.allow)
            ));
        }
        if let Some(status) = self.status
            && status != decision.status
        {
            problems.push(format!("expected status {status}, got {}", decision.status));
        }
        if let Some(error) = &self.error
            && error != decision.error.as_str()
        {
            problems.push(format!(
                "expected error `{error}`, got `{}`",
                decision.error.as_str()
            ));
        }
        if let Some(scope) = &self.scope {
            let got = challenge_scope(&decision.www_authenticate).unwrap_or_default();
            if scope != got {
                problems.push(format!("expected scope `{scope}`, got `{got}`"));
            }
        }
        if let Some(policies) = &self.policies {
            let got: BTreeSet<String> = decision.policies.iter().cloned().collect();
            if *policies != got {
                problems.push(format!(
                    "expected policies [{}], got [{}]",
                    join(policies),
                    join(&got)
                ));
            }
        }
        problems
    }
}

/// One line saying what a decision was and why.
pub fn describe(decision: &Decision) -> String {
    let mut line = verdict(decision.allow).to_owned();
    if !decision.allow {
        let _ = write!(line, ", status {}", decision.status);
        if decision.error != ErrorCode::None {
            let _ = write!(line, ", error `{}`", decision.error.as_str());
        }
        if let Some(scope) = challenge_scope(&decision.www_authenticate) {
            let _ = write!(line, ", scope `{scope}`");
        }
    }
    if decision.policies.is_empty() {
        line.push_str(if decision.allow {
            ""
        } else {
            " (no policy permitted it)"
        });
    } else {
        let _ = write!(line, " (policies: {})", decision.policies.join(", "));
    }
    line
}

fn verdict(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `scope` attribute of a `WWW-Authenticate` challenge built by the decider.
fn challenge_scope(challenge: &str) -> Option<&str> {
    let (_, rest) = challenge.split_once(", scope=\"")?;
    rest.strip_suffix('"')
}

/// Test files under `root`, sorted; `root` itself when it names a file.
fn find_test_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let metadata = std::fs::metadata(root)
        .map_err(|error| format!("cannot read `{}`: {error}", root.display()))?;
    if metadata.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = std::fs::read_dir(&directory)
            .map_err(|error| format!("cannot list `{}`: {error}", directory.display()))?;
        for entry in entries {
            let entry =
                entry.map_err(|error| format!("cannot list `{}`: {error}", directory.display()))?;
            let path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if file_type.is_dir() {
                if !name.starts_with('.') {
                    pending.push(path);
                }
            } else if TEST_FILE_SUFFIXES
                .iter()
                .any(|suffix| name.ends_with(suffix))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
