//! DNS over TCP (RFC 7766): each message carries a two-byte length; a connection may carry many
//! queries, answered in order; a client that sends nothing for `IDLE` is disconnected. The same
//! `Responder` decides as for UDP, and answers may be as large as the 64 KiB a length allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::forward::Forwarder;
use super::respond::{Plan, Responder, Sections, decode, emit, formerr};
use crate::service::RunError;
use crate::sockets::accept;

/// A client that sends nothing for this long is disconnected.
const IDLE: Duration = Duration::from_secs(10);
/// Open connections per listener; beyond this, new ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;

/// Accepts connections until `shutdown`; ends early only when the listener itself breaks.
pub async fn serve(
    listener: TcpListener,
    responder: Arc<Responder>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, "DNS TCP") => accepted?,
        };
        let (responder, forwarder, stop) = (responder.clone(), forwarder.clone(), shutdown.clone());
        connections.spawn(
            async move {
                let _permit = permit;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = connection(stream, peer, &responder, &forwarder) => {}
                }
            }
            .instrument(tracing::info_span!("connection", %peer)),
        );
        // Finished connections are reaped as we go, so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    Ok(())
}

/// Answers queries on one connection until the client closes it, goes idle or breaks framing.
async fn connection(mut stream: TcpStream, peer: SocketAddr, responder: &Responder, forwarder: &Forwarder) {
    let mut buf = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            buf.resize(usize::from(len), 0);
            stream.read_exact(&mut buf).await.map(drop)
        };
        match tokio::time::timeout(IDLE, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "DNS TCP read failed");
                }
                return;
            }
            Err(_) => return tracing::debug!("DNS TCP client idle; closing"),
        }
        let Some(reply) = answer(&buf, peer, responder, forwarder).await else { return };
        // An answer is at most 65,535 bytes (`emit`'s limit), so its length fits the prefix.
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&u16::try_from(reply.len()).unwrap_or(u16::MAX).to_be_bytes());
        framed.extend_from_slice(&reply);
        if let Err(e) = stream.write_all(&framed).await {
            return tracing::debug!(error = %e, "DNS TCP write failed");
        }
    }
}

/// The answer to one message; `None` closes the connection (nothing sensible to say).
async fn answer(data: &[u8], peer: SocketAddr, responder: &Responder, forwarder: &Forwarder) -> Option<Vec<u8>> {
    let Some(request) = decode(data, peer, Protocol::Tcp) else { return formerr(data) };
    match responder.plan(&request, peer) {
        Plan::Reply { meta, answer } => {
            emit(&request, meta, answer.as_ref().map(Sections::from).unwrap_or_default(), u16::MAX)
        }
        Plan::Forward { meta, query, dnssec_ok } => {
            forwarder.answer(responder, &request, meta, &query, dnssec_ok, u16::MAX).await
        }
    }
}
