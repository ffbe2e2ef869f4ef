//! Postern's login UI. The Leptos pages arrive with the login-UI issue; until then this crate only
//! pins down how the UI addresses the login API through the shared types.

/// URL of the pending-request endpoint for a request handle, under the API's base URL.
pub fn pending_request_url(api_base: &str, request: &str) -> String {
    format!("{}{}/{}", api_base.trim_end_matches('/'), shared::AUTHORIZATION_REQUEST_PATH, request)
}

#[cfg(test)]
mod tests {
    #[test]
    fn joins_without_double_slash() {
        assert_eq!(
            super::pending_request_url("https://api.example/", "abc"),
            "https://api.example/api/authorization-requests/abc"
        );
    }
}
