//! A blocking client of a running `sdx serve` (its admin token), shared by the tests that
//! drive real servers.

use serde_json::Value;

/// A client of one API.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port`.
    pub url: String,
    /// The administrator's bearer token.
    pub token: String,
    /// The HTTP agent.
    pub agent: ureq::Agent,
}

impl Api {
    /// `method path` with `body`: the status and the JSON answer (`Null` when not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            _ => unreachable!(),
        };
        let mut r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}
