//! Building an [`ApiState`]: the store (in memory, SQLite or PostgreSQL), the owner of new
//! builds, the spool locator, and the leases of an instance sharing its store.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use executor_base::{Error, ErrorKind, Executor};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;

use crate::config::ApiConfig;
use crate::keys::{TokenIssuer, random_id};
use crate::lease::Leases;
use crate::store::{BuildStore, MemoryBuildStore, StoreUri};

use super::{ApiState, EVENT_CAPACITY, Inner, OWNER_SERVE, SpoolLocator};

/// Builds an [`ApiState`]: the store, the owner of new builds, the spool locator.
pub struct ApiStateBuilder {
    executor: Arc<dyn Executor>,
    config: ApiConfig,
    store: Option<Arc<dyn BuildStore>>,
    owner: String,
    spool: Option<SpoolLocator>,
    instance: Option<String>,
}

impl fmt::Debug for ApiStateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiStateBuilder")
            .field("config", &self.config)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl ApiStateBuilder {
    /// Keeps builds in `store` (default: `config.build_store`, else in memory).
    pub fn store(mut self, store: Arc<dyn BuildStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Marks new builds as driven by `owner` (default [`OWNER_SERVE`]); an adoption
    /// takes over the builds of one owner only.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Uses `uri` as `apiUri` unless the config names one (`publicUri`).
    pub fn default_public_uri(mut self, uri: impl Into<String>) -> Self {
        self.config.public_uri.get_or_insert_with(|| uri.into());
        self
    }

    /// Where `launch` spools what it could not report (read on adoption).
    pub fn spool(mut self, locator: SpoolLocator) -> Self {
        self.spool = Some(locator);
        self
    }

    /// With a shared store: the id this instance holds leases under (default
    /// `<host>:<pid>:<random>`, fresh for every process). Two live instances must not
    /// share one.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// Validates the config (errors name the key), opens the store, and loads (or
    /// creates and stores) the signing key and the administrator's token, so tokens
    /// handed out before a restart stay valid after it.
    pub async fn build(self) -> Result<ApiState, Error> {
        let config = self.config;
        config.validate()?;
        let store = match self.store {
            Some(s) => s,
            None => match &config.build_store {
                Some(uri) => StoreUri::parse(uri)?.open().await?,
                None => Arc::new(MemoryBuildStore::new()),
            },
        };
        let key_error = |e: String| {
            Error::new(ErrorKind::ConfigInvalid, e).with_context("key", "jwtPrivateKey")
        };
        let issuer = match &config.jwt_private_key {
            Some(pem) => TokenIssuer::from_pkcs8_pem(pem.expose_secret()).map_err(key_error)?,
            None => {
                let fresh = TokenIssuer::generate_pkcs8_pem().map_err(key_error)?;
                let pem = store.secret("jwtPrivateKey", &fresh).await?;
                TokenIssuer::from_pkcs8_pem(&pem).map_err(key_error)?
            }
        };
        let user_token = match &config.user_token {
            Some(t) => t.clone(),
            None => SecretString::from(
                store
                    .secret("userToken", &format!("sdx-{}", random_id()))
                    .await?,
            ),
        };
        let api_uri = config
            .public_uri
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_string();
        let leases = store.shared().then(|| {
            Leases::new(
                self.instance.unwrap_or_else(executor_base::pg::instance_id),
                std::time::Duration::from_millis(config.lease_ttl_ms),
                std::time::Duration::from_millis(config.lease_renew_ms),
            )
        });
        let state = ApiState {
            inner: Arc::new(Inner {
                executor: self.executor,
                issuer,
                config,
                api_uri,
                user_token,
                store,
                owner: self.owner,
                spool: self.spool,
                accepting: AtomicBool::new(true),
                events: broadcast::channel(EVENT_CAPACITY).0,
                tasks: Mutex::new(Vec::new()),
                leases,
            }),
        };
        if state.inner.leases.is_some() {
            state.spawn(crate::lease::run(state.clone()));
        }
        Ok(state)
    }
}

impl ApiState {
    /// A builder of the state of an API dispatching builds to `executor` (a `Router` or
    /// any backend).
    pub fn builder(executor: Arc<dyn Executor>, config: ApiConfig) -> ApiStateBuilder {
        ApiStateBuilder {
            executor,
            config,
            store: None,
            owner: OWNER_SERVE.into(),
            spool: None,
            instance: None,
        }
    }

    /// The state with the store of `config.build_store` (default: in memory).
    pub async fn new(executor: Arc<dyn Executor>, config: ApiConfig) -> Result<Self, Error> {
        Self::builder(executor, config).build().await
    }
}
