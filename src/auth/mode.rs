//! How a request is authenticated, by the configured mode: not at all
//! (`required = false`), by a JWT (`mode = "jwt"`, refetching a JWKS once
//! on an unknown `kid`), or by asking the app (`mode = "forward"`). The
//! subscribe layer reads what a request asks for and calls [`Authenticator::authenticate`]
//! to learn who sent it.

use std::net::IpAddr;

use super::forward::{Creds, ForwardAuth};
use super::jwks::{FetchedKeys, Jwks};
use super::jwt::{is_unknown_kid, Verifier};
use super::{token_of, Denied, Principal};
use crate::config::{Auth, AuthMode, Target};
use crate::http1::head::Head;
use crate::topic::Topic;

/// What deciding who a subscriber is needs besides its request: the
/// `[auth]` settings (and the keys they loaded) of the runtime the request
/// was routed with, the keys fetched from `jwks_url`, and the clients of
/// JWKS and forward auth.
pub struct Authenticator<'a> {
    pub auth: &'a Auth,
    /// Read anew for each verification: a refetch swaps them.
    pub fetched: &'a FetchedKeys,
    pub jwks: &'a Jwks,
    pub forward: &'a ForwardAuth,
    /// The app that forward auth asks (`[upstream] url`).
    pub upstream: &'a Target,
}

/// Forward auth's credentials, kept for rechecks (`None` in other modes).
pub type Forwarded = Option<Creds>;

impl Authenticator<'_> {
    /// Who the subscriber is. `requested` are the topics known before auth
    /// (forward auth sends them to the app).
    pub async fn authenticate(
        &self,
        head: &Head,
        peer: Option<IpAddr>,
        requested: &[Topic],
    ) -> Result<(Principal, Forwarded), Denied> {
        let auth = self.auth;
        if !auth.required {
            return Ok((Principal::default(), None));
        }
        match auth.mode {
            AuthMode::Jwt => match (self.jwt(head), &auth.jwks_url) {
                (Err(d), Some(url)) if is_unknown_kid(&d) => {
                    // The provider may have rotated its keys: refetch (at
                    // most once a minute) and try once more (the verifier
                    // reads the fetched keys anew).
                    if self.jwks.on_unknown_kid(url).await {
                        self.jwt(head).map(|p| (p, None))
                    } else {
                        Err(d)
                    }
                }
                (other, _) => other.map(|p| (p, None)),
            },
            AuthMode::Forward => {
                let creds = Creds::new(head, auth, peer, requested);
                let p = self.forward.authorize(&creds, auth, self.upstream).await?;
                Ok((p, Some(creds)))
            }
        }
    }

    /// A JWT from the request (header, query or cookie), verified with the
    /// keys in force.
    fn jwt(&self, head: &Head) -> Result<Principal, Denied> {
        let auth = self.auth;
        let Some((token, _)) = token_of(head, &auth.cookie)? else {
            return Err(Denied::Unauthorized {
                code: "missing",
                message: format!(
                    "a token is required: Authorization: Bearer, ?token=, or the {} cookie",
                    auth.cookie
                ),
            });
        };
        Verifier::new(auth, self.fetched).principal(&token)
    }
}
