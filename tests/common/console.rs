//! The web console in end-to-end tests: `xaas console` started as a real
//! process against the test's broker, and a client that reads its pages.

use std::time::Duration;

use super::Env;

/// The admin token the tests' consoles are started with.
pub const ADMIN_TOKEN: &str = "e2e-console-admin-token-5d1e";

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP client that does not follow redirects, so that an action's
/// `303 See Other` can be checked.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

impl Env {
    /// Starts `xaas console` on a free port, with `admin_token` in
    /// `XAAS_CONSOLE_ADMIN_TOKEN` (none: read-only), and waits until it
    /// answers. Returns its base URL.
    pub async fn spawn_console(&mut self, label: &str, admin_token: Option<&str>) -> String {
        let listen = format!("127.0.0.1:{}", free_port());
        self.spawn_xaas(label, &["console", "--listen", &listen], &[("XAAS_CONSOLE_ADMIN_TOKEN", admin_token)]);
        self.wait_console(label, &listen).await
    }

    /// Starts `xaas worker <role>` serving the console too
    /// (`--console-listen`), as [`Env::spawn_console`] does.
    pub async fn spawn_worker_with_console(&mut self, role: &str, label: &str, admin_token: Option<&str>) -> String {
        let listen = format!("127.0.0.1:{}", free_port());
        let args = ["worker", role, "--console-listen", &listen];
        self.spawn_xaas(label, &args, &[("XAAS_CONSOLE_ADMIN_TOKEN", admin_token)]);
        self.wait_console(label, &listen).await
    }

    async fn wait_console(&self, label: &str, listen: &str) -> String {
        let base = format!("http://{listen}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = self.http.get(format!("{base}/")).send().await
                && res.status().is_success()
            {
                return base;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the console did not answer within 60 s; its log:\n{}",
                self.log(label)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Fetches `url` until its page contains `text`; returns the page.
pub async fn wait_for_page(http: &reqwest::Client, url: &str, text: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let page = http.get(url).send().await.unwrap().text().await.unwrap();
        if page.contains(text) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never showed {text:?}; last page:\n{page}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> Option<String> {
    let at = page.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(page[at..].split('"').next()?.to_string())
}
