//! One pass over one set: claim its pods, plan, write the difference, report status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::{WasmDaemonSet, WasmDaemonSetStatus};
use crate::planner::Create;

use super::Error;
use super::claim::{self, Claim};
use super::context::{Context, SetState, Settled};
use super::expectations::Expectations;
use super::plan::{self, Failure};
use super::status::{self, PLUGIN_READY};
use super::sync::{self, Changes, PodDelete, Why};

/// Longest a set goes without a pass while nothing happens.
const RESYNC: Duration = Duration::from_secs(300);
/// Longest wait of one pass for the node and pod caches' first list.
const CACHE_WAIT: Duration = Duration::from_secs(2);
/// Retry interval of a set whose plugin fails.
const PLUGIN_RETRY: Duration = Duration::from_secs(30);
/// Writes of one pass in flight at once.
const WRITES_IN_FLIGHT: usize = 16;

/// Brings one set one step closer to its plan.
#[tracing::instrument(skip_all, fields(namespace, name))]
pub async fn reconcile(set: Arc<WasmDaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _running = ctx.running();
    let span = tracing::Span::current();
    let ns = set.namespace().unwrap_or_default();
    span.record("namespace", ns.as_str());
    span.record("name", set.name_any().as_str());

    // A pass waits for both caches' first list, but never indefinitely: a waiter that misses
    // the readiness wake-up is retried by the error policy, and the retry finds the caches
    // ready.
    let caches = async {
        ctx.nodes.wait_until_ready().await;
        ctx.pods.wait_until_ready().await
    };
    match tokio::time::timeout(CACHE_WAIT, caches).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(Error::CacheStopped),
        Err(_) => return Err(Error::CacheNotReady),
    }
    tracing::trace!("caches ready");
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let key = ObjectRef::from_obj(&*set);
    let state = ctx.state(&key);
    let mut state = state.lock().await;
    let action = pass(&set, &ctx, &mut state, &ns).await?;
    ctx.succeeded(&key);
    Ok(action)
}

/// Retries a failed pass after 1 s, doubling up to a minute while it keeps failing.
pub fn error_policy(set: Arc<WasmDaemonSet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    let failures = ctx.failed(&ObjectRef::from_obj(&*set));
    let delay = Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(RESYNC);
    tracing::warn!(namespace = set.namespace().unwrap_or_default(), name = set.name_any(),
        %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn pass(
    set: &Arc<WasmDaemonSet>,
    ctx: &Context,
    state: &mut SetState,
    ns: &str,
) -> Result<Action, Error> {
    let now = Instant::now();
    state.backoff.observe_generation(set.metadata.generation);
    let key = ObjectRef::from_obj(&**set);
    let notice =
        set.spec.policy.as_ref().and_then(|p| {
            crate::registry::sets::notice(&ctx.registry, &p.plugin, p.digest.is_some())
        });
    // Read before the pod cache: every event counted here is already in the cache.
    let pod_events = ctx.pod_events(&key);

    if let Some(settled) = state.settled.take() {
        let quiet = settled.generation == set.metadata.generation
            && settled.pod_events == pod_events
            && settled.notice == notice
            && now < settled.until
            && state.expectations.is_empty();
        if quiet {
            match plan::plan(ctx, state, set.clone(), None).await {
                Ok(planned) => {
                    ctx.metrics
                        .nodes_decided
                        .add(planned.applied.decided as u64);
                    ctx.planned_with(&key, planned.loaded.clone());
                    if !planned.applied.changed {
                        tracing::debug!(
                            decided = planned.applied.decided,
                            "no decision changed and no pod event since the last pass"
                        );
                        let mut settled = settled;
                        if planned.plugin != settled.plugin {
                            // A new version that answers as the old one did: only the
                            // version the status names changes.
                            record_version(ctx, set, planned.plugin.clone()).await?;
                            settled.plugin = planned.plugin;
                        }
                        ctx.metrics.quiet_passes.inc();
                        let wait = settled.until.saturating_duration_since(now);
                        state.settled = Some(settled);
                        return Ok(Action::requeue(wait));
                    }
                }
                Err(Failure::Plugin { reason, message }) => {
                    plugin_failed(ctx, set, &reason, message).await?;
                    return Ok(Action::requeue(PLUGIN_RETRY));
                }
                Err(Failure::Other(message)) => return Err(Error::Plan(message)),
            }
        }
    }

    let cached: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let claimed = claim::claim(set, cached.iter().map(|p| &**p)).map_err(Error::InvalidSet)?;
    let pods = settle_claim(ctx, set, ns, claimed).await?;
    state.expectations.observe(&pods, now);

    let planned = plan::plan(ctx, state, set.clone(), Some(pods.clone())).await;
    let (planned, plan) = match planned {
        Ok(mut planned) => {
            ctx.metrics
                .nodes_decided
                .add(planned.applied.decided as u64);
            ctx.planned_with(&key, planned.loaded.clone());
            let Some(plan) = planned.plan.take() else {
                return Err(Error::Plan("the planner returned no plan".to_string()));
            };
            (planned, plan)
        }
        Err(Failure::Plugin { reason, message }) => {
            plugin_failed(ctx, set, &reason, message).await?;
            return Ok(Action::requeue(PLUGIN_RETRY));
        }
        Err(Failure::Other(message)) => return Err(Error::Plan(message)),
    };

    let wall = Timestamp::now();
    let changes = sync::changes(
        set,
        &plan,
        &pods,
        &state.expectations,
        &mut state.backoff,
        now,
        wall,
    )
    .map_err(Error::InvalidSet)?;
    for node in &plan.nodes {
        if let crate::planner::Outcome::Skip { reason, .. } = &node.outcome {
            tracing::trace!(node = %node.node, %reason, "node skipped");
        }
    }
    tracing::debug!(
        nodes = plan.nodes.len(),
        decided = planned.applied.decided,
        pods = pods.len(),
        create = changes.create.len(),
        delete = changes.delete.len(),
        outdated = plan.outdated.len(),
        "planned"
    );
    let recheck_in = changes.recheck_in;
    let written = write(ctx, set, ns, &mut state.expectations, changes).await;

    let (mut observed, available_in) =
        status::observe(set, &plan, &pods, super::rollout::min_ready(set), wall);
    // A pod counted Ready but not yet available changes the status when its minReadySeconds
    // end, with no event to say so.
    let recheck_in = match (recheck_in, available_in) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    observed.plugin = planned.plugin.clone();
    let mut conditions = vec![status::rollout_condition(&observed)];
    if let Some(plugin) = &planned.plugin {
        if let Some((reason, message)) = &notice
            && !has_condition_reason(set, PLUGIN_READY, reason)
        {
            ctx.event(
                set,
                EventType::Warning,
                reason,
                "PluginSwap",
                message.clone(),
            )
            .await;
        }
        let (reason, message) = notice
            .clone()
            .unwrap_or(("PluginAnswered", format!("plugin {plugin} answered")));
        conditions.push(status::condition(
            PLUGIN_READY,
            "True",
            reason,
            message,
            set.metadata.generation,
        ));
    }
    write_status(ctx, set, observed, conditions).await?;

    let names: std::collections::HashSet<&str> = plan.nodes.iter().map(|n| &*n.node).collect();
    state.backoff.retain(now, |n| names.contains(n));
    written?;
    let wait = recheck_in.map_or(RESYNC, |d| d.min(RESYNC));
    state.settled = Some(Settled {
        generation: set.metadata.generation,
        pod_events,
        notice,
        plugin: planned.plugin.clone(),
        until: now + wait,
    });
    Ok(Action::requeue(wait))
}

/// Adopts orphans and releases strays; returns the set's pods afterwards. A failed adoption
/// ends the pass: planning without the orphan would put a second pod on its node.
async fn settle_claim(
    ctx: &Context,
    set: &WasmDaemonSet,
    ns: &str,
    claim: Claim<'_>,
) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut pods: Vec<Pod> = claim.owned.into_iter().cloned().collect();
    for orphan in claim.adopt {
        let name = orphan.name_any();
        let patch = Patch::Merge(claim::adopt_patch(set, orphan));
        match api.patch(&name, &PatchParams::default(), &patch).await {
            Ok(adopted) => {
                tracing::info!(pod = %name, "adopted pod");
                pods.push(adopted);
            }
            Err(source) => {
                return Err(Error::Pod {
                    action: "adopt",
                    pod: name,
                    source,
                });
            }
        }
    }
    for stray in claim.release {
        let name = stray.name_any();
        let patch = Patch::Merge(claim::release_patch(set, stray));
        match api.patch(&name, &PatchParams::default(), &patch).await {
            Ok(_) => tracing::info!(pod = %name, "released pod that no longer matches"),
            Err(source) => {
                return Err(Error::Pod {
                    action: "release",
                    pod: name,
                    source,
                });
            }
        }
    }
    Ok(pods)
}

/// Writes the plugin version a set now uses into its status, the rest as it was.
async fn record_version(
    ctx: &Context,
    set: &WasmDaemonSet,
    plugin: Option<String>,
) -> Result<(), Error> {
    let mut status = set.status.clone().unwrap_or_default();
    let condition = plugin.as_ref().map(|id| {
        let message = format!("plugin {id} answered");
        status::condition(
            PLUGIN_READY,
            "True",
            "PluginAnswered",
            message,
            set.metadata.generation,
        )
    });
    status.plugin = plugin;
    write_status(ctx, set, status, condition.into_iter().collect()).await
}

/// Whether the set's status already carries condition `type_` with `reason`.
fn has_condition_reason(set: &WasmDaemonSet, type_: &str, reason: &str) -> bool {
    set.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    })
}

/// Leaves the set's pods alone and says why in its status and an event.
async fn plugin_failed(
    ctx: &Context,
    set: &WasmDaemonSet,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    ctx.metrics.plugin_failures.inc();
    tracing::warn!(reason, %message, "plugin failed; leaving pods as they are");
    ctx.event(
        set,
        EventType::Warning,
        "PluginFailed",
        "Plan",
        format!("{reason}: {message}"),
    )
    .await;
    let kept = set.status.clone().unwrap_or_default();
    let failed = status::condition(
        PLUGIN_READY,
        "False",
        reason,
        message,
        set.metadata.generation,
    );
    write_status(ctx, set, kept, vec![failed]).await
}

/// Deletes, then creates, a bounded number at a time; records what is in flight. Returns the
/// first failure after trying everything.
async fn write(
    ctx: &Context,
    set: &WasmDaemonSet,
    ns: &str,
    expectations: &mut Expectations,
    changes: Changes,
) -> Result<(), Error> {
    for waiting in &changes.backing_off {
        let note = format!(
            "failed pod {} on node {} is left for {:?} before it is replaced",
            waiting.pod, waiting.node, waiting.wait
        );
        ctx.event(set, EventType::Warning, "FailedPodBackoff", "Delete", note)
            .await;
    }

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let deletes = stream::iter(changes.delete)
        .map(|d| delete_pod(ctx, set, &api, d))
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let mut first_error = None;
    for result in deletes {
        match result {
            Ok(Some(d)) => expectations.expect_delete(&d.pod, &d.node, Instant::now()),
            Ok(None) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }

    let creates = stream::iter(changes.create)
        .map(|c| create_pod(ctx, set, &api, c))
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for result in creates {
        match result {
            Ok((node, pod)) => expectations.expect_create(&node, &pod, Instant::now()),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn why(delete: &PodDelete) -> String {
    match delete.why {
        Why::Plan(reason) => format!("{reason:?}"),
        Why::Outdated => "Outdated".to_string(),
    }
}

/// Deletes one pod; `Ok(None)` when it was already gone.
async fn delete_pod(
    ctx: &Context,
    set: &WasmDaemonSet,
    api: &Api<Pod>,
    delete: PodDelete,
) -> Result<Option<PodDelete>, Error> {
    let params = DeleteParams {
        preconditions: delete.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let reason = why(&delete);
    match api.delete(&delete.pod, &params).await {
        Ok(_) => {
            ctx.metrics.pods_deleted.inc();
            tracing::info!(pod = %delete.pod, node = %delete.node, reason, "deleted pod");
            let note = format!(
                "deleted pod {} on node {} ({reason})",
                delete.pod, delete.node
            );
            ctx.event(set, EventType::Normal, "SuccessfulDelete", "Delete", note)
                .await;
            Ok(Some(delete))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => {
            ctx.metrics.pod_write_failures.inc();
            let note = format!(
                "failed to delete pod {} on node {}: {}",
                delete.pod,
                delete.node,
                api_message(&source)
            );
            ctx.event(set, EventType::Warning, "FailedDelete", "Delete", note)
                .await;
            Err(Error::Pod {
                action: "delete",
                pod: delete.pod,
                source,
            })
        }
    }
}

/// Creates one pod; returns its node and generated name.
async fn create_pod(
    ctx: &Context,
    set: &WasmDaemonSet,
    api: &Api<Pod>,
    create: Create,
) -> Result<(String, String), Error> {
    match api.create(&PostParams::default(), &create.pod).await {
        Ok(pod) => {
            ctx.metrics.pods_created.inc();
            let name = pod.name_any();
            tracing::info!(pod = %name, node = %create.node, "created pod");
            let note = format!("created pod {name} on node {}", create.node);
            ctx.event(set, EventType::Normal, "SuccessfulCreate", "Create", note)
                .await;
            Ok((create.node, name))
        }
        Err(source) => {
            ctx.metrics.pod_write_failures.inc();
            let note = format!(
                "failed to create a pod on node {}: {}",
                create.node,
                api_message(&source)
            );
            ctx.event(set, EventType::Warning, "FailedCreate", "Create", note)
                .await;
            Err(Error::Pod {
                action: "create",
                pod: format!("for node {}", create.node),
                source,
            })
        }
    }
}

/// What the API server said, without the client's wrapping; other errors as they print.
pub(super) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.code)
        }
        other => other.to_string(),
    }
}

/// Writes `status` with `conditions` merged in, through the status subresource, only when it
/// differs from what the set shows.
async fn write_status(
    ctx: &Context,
    set: &WasmDaemonSet,
    mut status: WasmDaemonSetStatus,
    conditions: Vec<Condition>,
) -> Result<(), Error> {
    let old = set.status.clone();
    status.conditions = old
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    for condition in conditions {
        status::merge_conditions(&mut status.conditions, condition);
    }
    if old.as_ref() == Some(&status) {
        return Ok(());
    }

    let new = serde_json::to_value(&status).map_err(|e| Error::Plan(e.to_string()))?;
    let body = match &old {
        Some(old) => {
            let old = serde_json::to_value(old).map_err(|e| Error::Plan(e.to_string()))?;
            status::merge_patch(&old, &new)
        }
        None => new,
    };
    let ns = set.namespace().unwrap_or_default();
    let api: Api<WasmDaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await
    .map_err(Error::Status)?;
    tracing::debug!("status written");
    Ok(())
}
