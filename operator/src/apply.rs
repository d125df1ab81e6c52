//! Writes to the cluster: server-side apply under one field manager, and pruning of labelled
//! objects that are no longer desired.
//!
//! Server-side apply makes every write idempotent: applying an unchanged object changes
//! nothing (no new resourceVersion), so a reconcile of an unchanged resource is write-free
//! without the operator diffing objects itself. `force` takes ownership of fields another
//! manager (e.g. `kubectl edit`) changed: the resource is the source of truth.

use std::collections::BTreeSet;
use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::FIELD_MANAGER;
use crate::error::{Error, KubeContext, Result};

/// Bound of namespaced, typed Kubernetes objects the operator manages.
pub trait Managed:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}
impl<K> Managed for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Server-side applies one object and returns it as stored (with status).
pub async fn apply<K: Managed>(client: &Client, ns: &str, obj: &K) -> Result<K> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .context(format!("applying {} {name}", K::kind(&())))
}

/// Applies a list of objects in order.
pub async fn apply_all<K: Managed>(client: &Client, ns: &str, objs: &[K]) -> Result<Vec<K>> {
    let mut out = Vec::with_capacity(objs.len());
    for obj in objs {
        out.push(apply(client, ns, obj).await?);
    }
    Ok(out)
}

/// Lists the objects of a kind that carry `selector`.
pub async fn list<K: Managed>(client: &Client, ns: &str, selector: &str) -> Result<Vec<K>> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .context(format!("listing {}", K::plural(&())))?;
    Ok(list.items)
}

/// Deletes one object (background propagation, so Jobs take their pods along); a missing
/// object is not an error.
pub async fn delete<K: Managed>(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context(format!("deleting {} {name}", K::kind(&()))),
    }
}

/// Deletes the `existing` objects whose names are not in `keep`; returns what was deleted.
pub async fn prune<K: Managed>(
    client: &Client,
    ns: &str,
    existing: &[K],
    keep: &[K],
) -> Result<Vec<String>> {
    let keep: BTreeSet<String> = keep.iter().map(|k| k.name_any()).collect();
    let mut deleted = Vec::new();
    for obj in existing {
        let name = obj.name_any();
        if !keep.contains(&name) && obj.meta().deletion_timestamp.is_none() {
            delete::<K>(client, ns, &name).await?;
            deleted.push(format!("{}/{name}", K::kind(&())));
        }
    }
    Ok(deleted)
}
