//! The `policies:` section: the directory of Cedar policies and its schema, or the policies a caller
//! already holds, compiled into the [`PolicySet`] decisions are made with.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::errors::Errors;
use super::raw;
use crate::policy::{PolicyFile, PolicySet};

/// The policy directory and schema file a configuration names, resolved against its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub directory: PathBuf,
    pub schema: Option<PathBuf>,
}

/// Where the policy files come from: the configured directory, or files the caller already holds.
#[derive(Debug)]
pub enum PolicyOrigin {
    Configured,
    Embedded(Vec<PolicyFile>),
}

/// Compiles the policies of `origin`: for [`PolicyOrigin::Configured`], those of the directory that
/// `policies:` names, returned with where they were read from.
pub(super) fn load_policies(
    value: Option<Value>,
    origin: PolicyOrigin,
    base_dir: &Path,
    errors: &mut Errors,
) -> (Option<PolicySet>, Option<PolicySource>) {
    let mut policy_source = None;
    let policies = match origin {
        PolicyOrigin::Embedded(files) => PolicySet::compile(files)
            .map_err(|problems| {
                problems
                    .into_iter()
                    .for_each(|problem| errors.push("policies", problem))
            })
            .ok(),
        PolicyOrigin::Configured => match value {
            None => {
                errors.push(
                    "policies",
                    "required: give `path`, a directory of `*.cedar` files",
                );
                None
            }
            Some(value) => errors
                .deserialize::<raw::Policies>("policies", value)
                .and_then(|raw| {
                    let source = PolicySource {
                        directory: base_dir.join(raw.path),
                        schema: raw.schema.map(|schema| base_dir.join(schema)),
                    };
                    let policies = PolicySet::load_dir(&source.directory, source.schema.as_deref())
                        .map_err(|problems| {
                            problems
                                .into_iter()
                                .for_each(|problem| errors.push("policies", problem))
                        })
                        .ok();
                    policy_source = Some(source);
                    policies
                }),
        },
    };
    (policies, policy_source)
}
