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
