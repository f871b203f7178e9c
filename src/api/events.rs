//! The event log over HTTP: filtered queries, and `?follow=true` as Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::inventory::types::{parse_duration, shown};
use crate::inventory::{MacAddr, Name, Timestamp};
use crate::store::events::{Event, EventKind, Filter, Log, Source};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// Query parameters of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// `events` (the default: boot, services, lifecycle) or `audit` (every API write).
    kind: Option<String>,
    /// Only events about this node.
    node: Option<String>,
    /// Only events about this MAC address.
    mac: Option<String>,
    /// Only events from this subsystem (dhcp, dns, tftp, http, lb, api, ...).
    source: Option<String>,
    /// Comma-separated event types (lease_acked,phone_home).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    types: Option<String>,
    /// RFC 3339 time, or a duration back from now (`10m`).
    since: Option<String>,
    /// Only events with a larger sequence number (resume).
    #[param(value_type = Option<u64>)]
    after: Option<String>,
    /// Most events to return (default 100, at most 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// Keep the response open and stream new events as Server-Sent Events.
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
}

fn parse<T, E: std::fmt::Display>(
    field: &str,
    value: &Option<String>,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    value.as_deref().map(f).transpose().map_err(|e| ApiError::bad(field, format!("{field}: {e}")))
}

fn filter_of(q: &EventQuery) -> Result<(Filter, usize, bool), ApiError> {
    let since = parse("since", &q.since, |s| {
        s.parse::<Timestamp>().or_else(|_| parse_duration(s).map(|d| Timestamp(std::time::SystemTime::now() - d)))
    })?;
    let source = parse("source", &q.source, |s| {
        serde_json::from_value::<Source>(serde_json::Value::String(s.into()))
            .map_err(|_| format!("'{}' is not a source", shown(s)))
    })?;
    let log = parse("kind", &q.kind, |s| match s {
        "events" => Ok(Log::Events),
        "audit" => Ok(Log::Audit),
        _ => Err(format!("'{}' is not a kind of event (events, audit)", shown(s))),
    })?
    .unwrap_or_default();
    let filter = Filter {
        log,
        node: parse("node", &q.node, |s| s.parse::<Name>())?,
        mac: parse("mac", &q.mac, |s| s.parse::<MacAddr>())?,
        source,
        types: parse("type", &q.types, |t| {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| match EventKind::TYPE_NAMES.contains(&s) {
                    true => Ok(s.to_owned()),
                    false => Err(format!(
                        "'{}' is not an event type (known: {})",
                        shown(s),
                        EventKind::TYPE_NAMES.join(", ")
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
        })?
        .unwrap_or_default(),
        since,
        after: parse("after", &q.after, |s| {
            s.parse::<u64>().map_err(|_| format!("'{}' is not a sequence number", shown(s)))
        })?,
    };
    let limit = parse("limit", &q.limit, |s| match s.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("'{}' is not a number from 1 to {MAX_LIMIT}", shown(s))),
    })?
    .unwrap_or(DEFAULT_LIMIT);
    let follow = parse("follow", &q.follow, |s| match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("'{}' is not true or false", shown(s))),
    })?
    .unwrap_or(false);
    Ok((filter, limit, follow))
}

/// Recorded events, oldest first; with `follow=true`, an SSE stream of them and then of new ones.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Vec<Event>, description = "JSON array, or text/event-stream with follow=true"), (status = 400, body = ErrorBody)))]
pub async fn list_events(
    State(s): State<ApiState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest { field: None, message: e.body_text() })?;
    let (filter, limit, follow) = filter_of(&query)?;
    // Flush what was appended before this request, so a list holds every event that happened
    // before it was asked for (a DHCP ack recorded a moment ago is not missing); with
    // `follow`, subscribe first: every event is then in the backlog or in the live stream (or
    // both; duplicates are dropped by sequence).
    let live = follow.then(|| s.events.subscribe());
    s.events.flush().await;
    let events = s.events.clone();
    let backlog_filter = filter.clone();
    let backlog = tokio::task::spawn_blocking(move || events.query(&backlog_filter, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let Some(live) = live else {
        return Ok(Json(backlog).into_response());
    };
    let last = backlog.last().map(|e| e.seq).or(filter.after).unwrap_or(0);
    let stream = follow_stream(backlog, live, filter, last, s.shutdown.clone());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

struct Follow {
    backlog: std::vec::IntoIter<Event>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    last: u64,
    shutdown: tokio_util::sync::CancellationToken,
}

fn sse(event: &Event) -> SseEvent {
    SseEvent::default().id(event.seq.to_string()).event(event.details.type_name()).json_data(event).unwrap_or_default()
}

fn follow_stream(
    backlog: Vec<Event>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    last: u64,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = Follow { backlog: backlog.into_iter(), live, filter, last, shutdown };
    stream::unfold(state, |mut st| async move {
        if let Some(event) = st.backlog.next() {
            return Some((Ok(sse(&event)), st));
        }
        loop {
            let received = tokio::select! {
                () = st.shutdown.cancelled() => return None,
                r = st.live.recv() => r,
            };
            match received {
                Ok(event) if event.seq > st.last && st.filter.matches(&event) => {
                    st.last = event.seq;
                    return Some((Ok(sse(&event)), st));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let note = SseEvent::default()
                        .event("lagged")
                        .data(format!("{n} events were skipped; query with after={} to fetch them", st.last));
                    return Some((Ok(note), st));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
