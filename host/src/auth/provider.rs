//! What token endpoints say, classified once: whether the refusal is final, and the text
//! with the fix for the provider's known errors. One table per provider family.

use oauth2::basic::BasicErrorResponseType;
use oauth2::{RequestTokenError, StandardErrorResponse};

/// Microsoft identity platform (Entra ID) errors, by their AADSTS code, and what fixes
/// them.
const MICROSOFT: &[(&str, &str)] = &[
    (
        "AADSTS7000222",
        "the client secret expired: create a new one in the app registration and update client_secret",
    ),
    (
        "AADSTS700082",
        "the refresh token expired after 90 days unused: authorize the account again",
    ),
    (
        "AADSTS54005",
        "the authorization code was already redeemed: start the authorization again, each code works once",
    ),
    (
        "AADSTS50011",
        "the redirect URI does not match the app registration: register exactly the configured redirect_url",
    ),
    (
        "AADSTS900971",
        "no reply address is registered: add the configured redirect_url to the app registration",
    ),
    (
        "AADSTS7000215",
        "the client secret is wrong: copy the secret's Value (not its Secret ID) from the app registration into client_secret",
    ),
    (
        "AADSTS700016",
        "no app with this client ID is registered in the tenant: check client_id and the tenant",
    ),
    (
        "AADSTS90002",
        "the tenant does not exist: check the tenant name or ID",
    ),
    (
        "AADSTS65004",
        "the user declined the consent: authorize again and accept, or ask an administrator to grant consent for the tenant",
    ),
];

/// The fix for a provider's known error named in `text`.
pub fn fix_for(text: &str) -> Option<&'static str> {
    MICROSOFT
        .iter()
        .find(|(code, _)| text.contains(code))
        .map(|(_, fix)| *fix)
}

/// What a token endpoint said, as text with the fix for known errors, and whether the
/// refusal is final (the grant or the client is refused: retrying cannot help).
pub(super) fn describe<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, StandardErrorResponse<BasicErrorResponseType>>,
) -> (bool, String) {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let mut text = r.error().to_string();
            if let Some(d) = r.error_description() {
                text.push_str(&format!(": {d}"));
            }
            if let Some(fix) = fix_for(&text) {
                text.push_str(&format!(". Fix: {fix}"));
            }
            let final_ = matches!(
                r.error(),
                BasicErrorResponseType::InvalidGrant
                    | BasicErrorResponseType::InvalidClient
                    | BasicErrorResponseType::UnauthorizedClient
            );
            (final_, text)
        }
        RequestTokenError::Request(e) => (
            false,
            format!("the token endpoint could not be reached: {e}"),
        ),
        RequestTokenError::Parse(e, _) => (
            false,
            format!("the token endpoint's answer is not OAuth2: {e}"),
        ),
        RequestTokenError::Other(e) => (false, e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use oauth2::HttpClientError;

    use super::*;

    fn server_error(kind: BasicErrorResponseType, text: &str) -> (bool, String) {
        let e: RequestTokenError<HttpClientError<reqwest::Error>, _> =
            RequestTokenError::ServerResponse(StandardErrorResponse::new(
                kind,
                Some(text.into()),
                None,
            ));
        describe(&e)
    }

    #[test]
    fn known_provider_errors_get_their_fix() {
        let (final_, text) = server_error(
            BasicErrorResponseType::InvalidClient,
            "AADSTS7000222: The provided client secret keys are expired.",
        );
        assert!(final_ && text.contains("create a new one"), "{text}");
        let (final_, text) = server_error(
            BasicErrorResponseType::InvalidGrant,
            "AADSTS700082: The refresh token has expired due to inactivity.",
        );
        assert!(
            final_ && text.contains("authorize the account again"),
            "{text}"
        );
        let (_, text) = server_error(
            BasicErrorResponseType::InvalidGrant,
            "AADSTS54005: OAuth2 Authorization code was already redeemed",
        );
        assert!(text.contains("each code works once"), "{text}");
        let (_, text) = server_error(
            BasicErrorResponseType::InvalidRequest,
            "AADSTS50011: The redirect URI specified in the request does not match",
        );
        assert!(
            text.contains("register exactly the configured redirect_url"),
            "{text}"
        );
        let (final_, _) = server_error(
            BasicErrorResponseType::Extension("temporarily_unavailable".into()),
            "busy",
        );
        assert!(!final_, "only refusals of the grant or client are final");
    }
}
