//! API tokens: loaded from a file or the environment (never the TOML), each with a name and a
//! role, compared in constant time. The token's name is the actor in the audit log.
//!
//! A secret is a `Secret` from the moment it is read, and no error repeats a field of a line it
//! refuses: a line with its fields swapped would otherwise print the secret.

use crate::secret::Secret;
use std::path::Path;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read status, runs and metrics.
    Read,
    /// Also act: fail over, approve, abort, pause.
    Operate,
}

/// One token.
#[derive(Clone)]
pub struct Token {
    /// Who holds it; the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    secret: Secret,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// All tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// A token file or variable that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {message}")]
pub struct TokenError {
    /// The file or variable.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest token name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A name is a short identifier, so a secret put in its place is refused without being echoed.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Tokens {
    /// Parses `name:role:secret` lines; `#` starts a comment.
    pub fn parse(text: &str, source_name: &str) -> Result<Tokens, TokenError> {
        let mut tokens: Vec<Token> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let error = |message: String| TokenError {
                source_name: source_name.to_string(),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(error("expected name:role:secret".into()));
            };
            let role = match role {
                "read" => Role::Read,
                "operate" => Role::Operate,
                _ => {
                    return Err(error(
                        "the second field must be the role, `read` or `operate` (expected name:role:secret)".into(),
                    ));
                }
            };
            if !valid_name(name) {
                return Err(error(format!(
                    "the first field must be the token's name, 1 to {MAX_NAME_LEN} letters, digits, `.`, `_`, `-` or `@` (expected name:role:secret); it is the actor in the audit log"
                )));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(error(format!(
                    "the secret (the third field) is shorter than {MIN_SECRET_LEN} characters"
                )));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(error(format!("token name `{name}` is used twice")));
            }
            // Two tokens with one secret: the caller could not be told apart, and a read token
            // could act as an operate one. The names are given, never the secret.
            if let Some(twin) = tokens
                .iter()
                .find(|t| constant_time_eq(t.secret.expose().as_bytes(), secret.as_bytes()))
            {
                return Err(error(format!(
                    "tokens `{}` and `{name}` have the same secret; give each token its own secret",
                    twin.name
                )));
            }
            tokens.push(Token {
                name: name.to_string(),
                role,
                secret: Secret::new(secret),
            });
        }
        Ok(Tokens { tokens })
    }

    /// Tokens from `DR_API_TOKENS_FILE` (a path) or `DR_API_TOKENS` (the lines themselves).
    /// None configured is an empty set: every authenticated request is then refused.
    pub fn from_env() -> Result<Tokens, TokenError> {
        if let Ok(path) = std::env::var("DR_API_TOKENS_FILE") {
            let text = std::fs::read_to_string(Path::new(&path)).map_err(|e| TokenError {
                source_name: path.clone(),
                line: 0,
                message: format!("cannot read the token file: {e}"),
            })?;
            return Tokens::parse(&text, &path);
        }
        match std::env::var("DR_API_TOKENS") {
            Ok(text) => Tokens::parse(&text.replace(',', "\n"), "DR_API_TOKENS"),
            Err(_) => Ok(Tokens::default()),
        }
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret is `presented`. Every secret is compared, in constant time, so
    /// the answer's timing says nothing about which token or how much of it matched.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        let presented = presented.as_bytes();
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(token.secret.expose().as_bytes(), presented) {
                found = Some(token);
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    let longest = a.len().max(b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match() {
        let tokens = Tokens::parse(
            "# on-call\nalice:operate:alice-secret-0123456789\ngrafana:read:grafana-secret-0123456\n",
            "tokens",
        )
        .unwrap();
        assert_eq!(
            tokens.find("alice-secret-0123456789").unwrap().name,
            "alice"
        );
        assert_eq!(
            tokens.find("grafana-secret-0123456").unwrap().role,
            Role::Read
        );
        assert!(tokens.find("alice-secret-012345678").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = Tokens::parse(
            "a:operate:0123456789abcdef\nb:admin:0123456789abcdef\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("`read` or `operate`"),
            "{}",
            err.message
        );
        // The refused field is not repeated: in a swapped line it would be the secret.
        assert!(!err.message.contains("admin"), "{}", err.message);
        assert!(
            Tokens::parse("a:read:short", "f")
                .unwrap_err()
                .message
                .contains("shorter")
        );
        assert!(Tokens::parse("a:read:0123456789abcdef\na:read:fedcba9876543210", "f").is_err());
    }

    #[test]
    fn two_tokens_with_one_secret_are_refused_by_name() {
        let err = Tokens::parse(
            "grafana:read:shared-secret-0123456\nalice:operate:shared-secret-0123456\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("`grafana`") && err.message.contains("`alice`"));
        assert!(!err.to_string().contains("shared-secret"), "{err}");
    }

    #[test]
    fn a_line_with_its_fields_swapped_never_shows_the_secret() {
        let secret = "swapped-secret-value-0123456789";
        for line in [
            format!("alice:{secret}:operate"),
            format!("{secret}:operate:alice"),
            format!("operate:alice:{secret}"),
            format!("{secret}:alice:operate"),
            format!("operate:{secret}:alice"),
            format!("alice:operate:{}", &secret[..8]),
        ] {
            let err = Tokens::parse(&line, "DR_API_TOKENS").unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(&secret[..8]), "{line}: {shown}");
        }
        let tokens = Tokens::parse(&format!("alice:operate:{secret}"), "f").unwrap();
        assert!(!format!("{tokens:?}").contains(secret));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
