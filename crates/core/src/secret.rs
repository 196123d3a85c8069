//! Secrets as the configuration names them: which environment variable or
//! file holds each one. Parsing `xaas.toml` reads none of them; a role
//! resolves the secrets it uses when it starts. So `xaas status` or
//! `xaas enqueue` starts without the keys to the Okta org, and a fetcher
//! still fails at start, naming the setting, when its Graph secret is
//! missing, not at its first run.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, EnvLookup, FileReader};

/// What a secret is for; says what it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    GraphClientSecret,
    OktaApiToken,
    OktaPrivateKey,
    /// A sync's alerts webhook URL (`[syncs.<name>.alerts]`).
    AlertWebhook,
}

impl SecretKind {
    fn what(self) -> &'static str {
        match self {
            Self::GraphClientSecret => "the Graph client secret",
            Self::OktaApiToken => "the Okta API token",
            Self::OktaPrivateKey => "the Okta service app's private key",
            Self::AlertWebhook => "the alerts webhook URL",
        }
    }

    /// Whatever else than being non-empty the value must be.
    fn check(self, value: &str) -> Result<(), &'static str> {
        match self {
            Self::OktaPrivateKey if !(value.contains("-----BEGIN") && value.contains("PRIVATE KEY-----")) => {
                Err("does not hold a PEM private key (expected a -----BEGIN PRIVATE KEY----- block)")
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Env(String),
    File(PathBuf),
}

/// Where one secret is read from. Holds no secret: printing it is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    kind: SecretKind,
    source: Source,
    /// The setting that chose the source, for errors:
    /// `syncs.demo.target.token_env`.
    setting: String,
    /// The setting that could name a file instead (`token_file`), for the
    /// hint of a variable that is not set.
    file_setting: &'static str,
    /// The environment override that set `setting`, if one did.
    set_by: Option<String>,
}

impl SecretRef {
    /// A secret in the environment variable `var`, named by `setting`.
    pub(crate) fn env(
        kind: SecretKind,
        var: String,
        setting: String,
        file_setting: &'static str,
        set_by: Option<String>,
    ) -> Self {
        Self { kind, source: Source::Env(var), setting, file_setting, set_by }
    }

    /// A secret in the file at `path`, named by `setting`.
    pub(crate) fn file(kind: SecretKind, path: PathBuf, setting: String, set_by: Option<String>) -> Self {
        Self { kind, source: Source::File(path), setting, file_setting: "", set_by }
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The full path of the setting that names the secret's source.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// Reads the secret from `env` or, for a file, with `files`. Fails with
    /// the setting named and what to set.
    pub fn resolve(&self, env: EnvLookup<'_>, files: FileReader<'_>) -> Result<SecretString, ConfigError> {
        let what = self.kind.what();
        let value = match &self.source {
            Source::Env(var) => match env(var) {
                None => {
                    return Err(self.invalid(format!(
                        "environment variable {var} is not set ({what} is read only from the environment, \
                         or from the file named by {})",
                        self.file_setting
                    )));
                }
                Some(v) if v.is_empty() => {
                    return Err(self.invalid(format!("environment variable {var} is empty; it should hold {what}")));
                }
                Some(v) => v,
            },
            Source::File(path) => {
                let text = files(path).map_err(|e| self.invalid(format!("cannot read {path:?}: {e}")))?;
                // Files usually end with a newline that is not part of the secret.
                let text = text.trim_end();
                if text.is_empty() {
                    return Err(self.invalid(format!("{path:?} is empty; it should hold {what}")));
                }
                text.to_string()
            }
        };
        let value = SecretString::from(value);
        self.kind.check(value.expose_secret()).map_err(|problem| self.invalid(problem))?;
        Ok(value)
    }

    fn invalid(&self, problem: impl std::fmt::Display) -> ConfigError {
        let problem = match &self.set_by {
            Some(var) => format!("{problem} (set by environment variable {var})"),
            None => problem.to_string(),
        };
        ConfigError::Invalid { setting: self.setting.clone(), problem }
    }
}
