//! `connections list | show | revoke`: the connections' health as the operator sees it, and a
//! revocation.
//!
//! Connections are found through the secondary indexes, as the `/v1/connections` routes find
//! them (every shard of [`BY_PLATFORM`], or one [`BY_END_USER`] partition), never by a Scan;
//! each found item is read again by its key before it is shown or revoked, since an index is
//! only eventually consistent. What is printed is the [`Connection`] view, which holds no token.

use super::AdminError;
use crate::connection::{self, Connection, PLATFORM_SHARDS, platform_partition, user_partition};
use crate::events::names;
use crate::store::{BY_END_USER, BY_PLATFORM, Condition, Index, Item, Store, StoreError, Write};
use serde_json::Value;

/// How many index items one page of a listing reads.
const PAGE: usize = 200;

/// Which connections `connections list` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this platform's (one of [`connection::PLATFORMS`]).
    pub platform: Option<String>,
    /// Only this end user's.
    pub end_user: Option<String>,
}

/// The platforms `platform` names: itself if it is a connection platform, every one if `None`.
pub(crate) fn platforms(platform: Option<&str>) -> Result<Vec<&'static str>, AdminError> {
    match platform {
        None => Ok(connection::PLATFORMS.to_vec()),
        Some(p) => connection::PLATFORMS
            .iter()
            .find(|known| **known == p)
            .map(|known| vec![*known])
            .ok_or_else(|| {
                AdminError::Usage(format!(
                    "`{p}` is not a platform with connections ({})",
                    connection::PLATFORMS.join(", ")
                ))
            }),
    }
}

/// One index partition read page by page: the cursor of a walk that can stop after any page.
pub(crate) struct Pages {
    index: Index,
    pk: String,
    limit: usize,
    after: Option<String>,
    done: bool,
}

impl Pages {
    /// The pages of partition `pk` of `index`, `limit` items each.
    pub(crate) fn new(index: Index, pk: String, limit: usize) -> Self {
        Self {
            index,
            pk,
            limit,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` once the partition's end was read.
    pub(crate) async fn next(
        &mut self,
        store: &dyn Store,
    ) -> Result<Option<Vec<Item>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = store
            .query_index(&self.index, &self.pk, self.after.as_deref(), self.limit)
            .await?;
        self.after = page
            .last()
            .and_then(|item| item.str(self.index.sk))
            .map(str::to_owned);
        self.done = page.len() < self.limit || self.after.is_none();
        Ok(Some(page))
    }
}

/// Every item of one index partition.
async fn whole(store: &dyn Store, index: Index, pk: String) -> Result<Vec<Item>, StoreError> {
    let mut pages = Pages::new(index, pk, PAGE);
    let mut out = Vec::new();
    while let Some(page) = pages.next(store).await? {
        out.extend(page);
    }
    Ok(out)
}

/// The items of every [`BY_PLATFORM`] shard of `platform`.
async fn all_of(store: &dyn Store, platform: &str) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    for shard in 0..PLATFORM_SHARDS {
        out.extend(whole(store, BY_PLATFORM, platform_partition(platform, shard)).await?);
    }
    Ok(out)
}

/// The connections the filter names, by platform then index order. An item that is not a
/// connection that can be shown is skipped with a warning, as the listing route does.
pub async fn list(store: &dyn Store, filter: &Filter) -> Result<Vec<Connection>, AdminError> {
    let mut out = Vec::new();
    for platform in platforms(filter.platform.as_deref())? {
        let items = match &filter.end_user {
            Some(user) => whole(store, BY_END_USER, user_partition(platform, user)).await?,
            None => all_of(store, platform).await?,
        };
        for item in items {
            match connection::view(&item) {
                Ok(c) => out.push(c),
                Err(e) => tracing::warn!(pk = %item.key.pk, error = %e, "not a connection"),
            }
        }
    }
    Ok(out)
}

/// The stored items of `platform`'s connections whose tenant is `tenant`, read again by key.
/// Several for a Saison cardholder connected by several end users or through several members.
async fn find(store: &dyn Store, platform: &str, tenant: &str) -> Result<Vec<Item>, AdminError> {
    let platform = platforms(Some(platform))?[0];
    // Keyed by the tenant alone: read directly (strongly consistent, whether or not the index
    // has caught up).
    let direct = match platform {
        "sesami" => Some(crate::sesami::install_key(tenant)),
        "haravan" => Some(crate::haravan::install_key(tenant)),
        "weblink" => Some(crate::weblink::session_key(tenant)),
        _ => None,
    };
    if let Some(key) = direct {
        return Ok(store.get(&key).await?.into_iter().collect());
    }
    let mut out = Vec::new();
    for item in all_of(store, platform).await? {
        if connection::view(&item).is_ok_and(|c| c.tenant == tenant)
            && let Some(current) = store.get(&item.key).await?
        {
            out.push(current);
        }
    }
    Ok(out)
}

/// The connection(s) of `platform` for `tenant` (more than one only for a Saison cardholder
/// connected more than once); not found is an error.
pub async fn show(
    store: &dyn Store,
    platform: &str,
    tenant: &str,
) -> Result<Vec<Connection>, AdminError> {
    let found = find(store, platform, tenant).await?;
    if found.is_empty() {
        return Err(AdminError::NotFound(format!(
            "no {platform} connection for `{tenant}`"
        )));
    }
    found
        .iter()
        .map(|item| connection::view(item).map_err(AdminError::from))
        .collect()
}

/// Revokes the connection of `platform` for `tenant`: its record, and with it every token, is
/// deleted, and its `connection.removed` event (status `revoked`) is written in the same
/// transaction, as an uninstall does. The delete is conditioned on the item read (its token
/// version, or its sealed token), so a concurrent refresh makes it fail rather than lose the
/// event's view; it is then retried on what is stored. Returns the revoked connection.
pub async fn revoke(
    store: &dyn Store,
    platform: &str,
    tenant: &str,
) -> Result<Connection, AdminError> {
    for _ in 0..3 {
        let found = find(store, platform, tenant).await?;
        let item = match found.as_slice() {
            [] => {
                return Err(AdminError::NotFound(format!(
                    "no {platform} connection for `{tenant}`"
                )));
            }
            [one] => one,
            many => {
                return Err(AdminError::Refused(format!(
                    "`{tenant}` names {} {platform} connections; revoke them through the /v1 API",
                    many.len()
                )));
            }
        };
        let view = connection::view(item)?.revoked();
        let writes = vec![
            Write::Delete(item.key.clone(), unchanged(item)),
            view.event_write(names::CONNECTION_REMOVED)?,
        ];
        match store.transact(&writes).await {
            Ok(()) => return Ok(view),
            Err(StoreError::Cancelled(_) | StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Refused(format!(
        "the {platform} connection for `{tenant}` kept changing; try again"
    )))
}

/// The condition that `item` is still as read: its token version, else its sealed access
/// token (Sesami's `token_sealed`), else that it exists.
fn unchanged(item: &Item) -> Condition {
    for name in ["token_version", "access_token_sealed", "token_sealed"] {
        if let Some(value @ Value::String(_)) = item.attrs.get(name) {
            return Condition::AttrEquals(name.into(), value.clone());
        }
    }
    Condition::Exists
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), crate::rfc3339::format)
}

/// Prints connections as a table, or as JSON lines (one [`Connection::to_json`] a line).
pub fn print(
    found: &[Connection],
    json: bool,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), AdminError> {
    if json {
        for c in found {
            writeln!(out, "{}", c.to_json())?;
        }
        return Ok(());
    }
    let header = [
        "PLATFORM",
        "TENANT",
        "STATUS",
        "END USER",
        "UPDATED",
        "EXPIRES",
        "LAST REFRESH",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 8]> = found
        .iter()
        .map(|c| {
            [
                c.platform.clone(),
                c.tenant.clone(),
                c.status.as_str().to_owned(),
                c.end_user.clone().unwrap_or_else(|| "-".into()),
                when(c.updated_at),
                when(c.expires_at),
                when(c.last_refresh_at),
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    writeln!(out, "{} connection(s)", rows.len())?;
    Ok(())
}

/// Prints one tenant's connection(s) in full: as `key: value` lines, or as JSON (an array when
/// there are several).
pub fn print_one(
    found: &[Connection],
    json: bool,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), AdminError> {
    if json {
        let value = match found {
            [one] => one.to_json(),
            many => Value::Array(many.iter().map(Connection::to_json).collect()),
        };
        writeln!(out, "{value:#}")?;
        return Ok(());
    }
    for (n, c) in found.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        let fields = [
            ("platform", c.platform.clone()),
            ("tenant", c.tenant.clone()),
            ("status", c.status.as_str().to_owned()),
            ("end user", c.end_user.clone().unwrap_or_else(|| "-".into())),
            ("scopes", c.scopes.join(" ")),
            ("created", when(c.created_at)),
            ("updated", when(c.updated_at)),
            ("expires", when(c.expires_at)),
            ("last refresh", when(c.last_refresh_at)),
            (
                "last error",
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ),
        ];
        for (name, value) in fields {
            writeln!(out, "{name:<13}{value}")?;
        }
    }
    Ok(())
}
