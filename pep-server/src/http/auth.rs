//! Bearer-token authentication with two roles.
//!
//! Tokens come from the config (`Authorization: Bearer <token>` only; never a query parameter, which
//! would end up in access logs and shell histories). The presented token is compared with *every*
//! configured token in constant time, so neither the content nor the position of a match leaks
//! through timing. Tokens are never logged: the log names the token's configured `name` instead.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::error::ApiError;

pub use crate::config::Role;

/// The name of a role as written in the config and in error messages.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Provision => "provision",
        Role::Read => "read",
    }
}

/// One configured token.
pub struct Token {
    name: String,
    secret: Zeroizing<Vec<u8>>,
    provision: bool,
    read: bool,
}

impl Token {
    /// A token named `name` (for logs) with secret `secret` and the given roles.
    pub fn new(name: impl Into<String>, secret: &str, roles: &[Role]) -> Token {
        Token {
            name: name.into(),
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
            provision: roles.contains(&Role::Provision),
            read: roles.contains(&Role::Read),
        }
    }

    fn has(&self, role: Role) -> bool {
        match role {
            Role::Provision => self.provision,
            Role::Read => self.read,
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("provision", &self.provision)
            .field("read", &self.read)
            .finish()
    }
}

/// The authentication policy of the server.
#[derive(Debug)]
pub enum Auth {
    /// Every request is allowed with every role (lab use only; the daemon warns at each start).
    Disabled,
    /// `Authorization: Bearer <token>` required, matched against these tokens.
    Bearer(Vec<Token>),
}

impl Auth {
    /// The policy of `config`: its `auth` mode and its tokens (inline and from `token_file`).
    pub fn from_config(config: &crate::config::Config) -> Result<Auth, crate::config::ConfigError> {
        match config.auth {
            crate::config::AuthMode::None => Ok(Auth::Disabled),
            crate::config::AuthMode::Tokens => {
                let tokens = config
                    .load_tokens()?
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let name = t
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("token #{}", i + 1));
                        Token::new(name, &t.token, &t.roles)
                    })
                    .collect();
                Ok(Auth::Bearer(tokens))
            }
        }
    }
}

/// Who made a request: the configured name of the token, or `anonymous` when auth is disabled.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

impl Auth {
    /// Checks the `Authorization` header value for `role`: 401 without a valid token, 403 with a
    /// valid token lacking the role.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        role: Role,
    ) -> Result<Principal, ApiError> {
        let tokens = match self {
            Auth::Disabled => return Ok(Principal("anonymous".into())),
            Auth::Bearer(tokens) => tokens,
        };
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized(
                "authentication required: send `Authorization: Bearer <token>`",
            ));
        };
        let presented = strip_bearer(value).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
        // Constant time over all tokens: no early exit, index selected branch-free.
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        for (i, token) in tokens.iter().enumerate() {
            let eq = token.secret.as_slice().ct_eq(presented);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index = u32::conditional_select(&index, &i, eq);
            found |= eq;
        }
        if !bool::from(found) {
            return Err(ApiError::unauthorized("the bearer token is not valid"));
        }
        let token = usize::try_from(index)
            .ok()
            .and_then(|i| tokens.get(i))
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))?;
        if !token.has(role) {
            return Err(ApiError::forbidden(format!(
                "token `{}` lacks the `{}` role needed here",
                token.name,
                role_name(role)
            )));
        }
        Ok(Principal(token.name.clone()))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, per RFC 7235).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// State of the auth middleware on one route: the policy and the role the route needs.
#[derive(Clone)]
pub struct RequireRole {
    /// The server's policy.
    pub auth: std::sync::Arc<Auth>,
    /// The role needed.
    pub role: Role,
}

/// Middleware: rejects the request unless it carries a token with the route's role; on success the
/// [`Principal`] is put into the request's extensions for the handler.
pub async fn require_role(
    State(required): State<RequireRole>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match required.auth.authorize(header, required.role) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn auth() -> Auth {
        Auth::Bearer(vec![
            Token::new("line1", "secret-provision", &[Role::Provision]),
            Token::new("export", "secret-read", &[Role::Read]),
            Token::new("both", "secret-both", &[Role::Provision, Role::Read]),
        ])
    }

    #[test]
    fn roles_are_enforced() {
        let a = auth();
        let p = a
            .authorize(Some(b"Bearer secret-provision"), Role::Provision)
            .unwrap();
        assert_eq!(p.0, "line1");
        let e = a
            .authorize(Some(b"Bearer secret-read"), Role::Provision)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            a.authorize(Some(b"bearer secret-both"), Role::Read)
                .unwrap()
                .0,
            "both"
        );
    }

    #[test]
    fn bad_tokens_are_401() {
        let a = auth();
        for header in [
            None,
            Some(&b"Bearer"[..]),
            Some(b"Bearer "),
            Some(b"Basic c2VjcmV0"),
            Some(b"Bearer secret-provisio"),
            Some(b"Bearer secret-provisionX"),
            Some(b"secret-provision"),
        ] {
            let e = a.authorize(header, Role::Read).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        }
    }

    #[test]
    fn debug_redacts_secret() {
        let dbg = format!("{:?}", auth());
        assert!(!dbg.contains("secret-"));
    }
}
