//! The records slipway serves, per zone, as the running DNS server holds them.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::dns::ZoneSet;

/// One zone with its serial and every record in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneView {
    pub zone: String,
    pub serial: u32,
    pub records: Vec<RecordView>,
}

/// One record, its data in zone-file form.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub value: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DnsFilter {
    /// Only this zone (e.g. `prod.lab.example`).
    pub zone: Option<String>,
}

/// List the zones and records slipway's DNS server answers from.
#[utoipa::path(get, path = "/api/v1/dns", tag = "dns", params(DnsFilter),
    responses((status = 200, body = Vec<ZoneView>), (status = 404, body = ErrorBody)))]
pub async fn list_zones(
    State(s): State<ApiState>,
    Query(filter): Query<DnsFilter>,
) -> Result<Json<Vec<ZoneView>>, ApiError> {
    let Some(zones) = s.running.get().dns else {
        return Err(ApiError::NotFound("DNS is not served: the config has no [dns] section".into()));
    };
    let zones = zones.borrow().clone();
    let wanted = filter.zone.map(|z| z.trim_end_matches('.').to_ascii_lowercase());
    let views = view(&zones, wanted.as_deref());
    if let (Some(zone), true) = (&wanted, views.is_empty()) {
        return Err(ApiError::NotFound(format!(
            "zone: slipway serves no zone '{}'",
            crate::inventory::types::shown(zone)
        )));
    }
    Ok(Json(views))
}

fn view(zones: &ZoneSet, only: Option<&str>) -> Vec<ZoneView> {
    let mut out: Vec<ZoneView> = zones
        .zones()
        .iter()
        .map(|z| (z, z.apex.to_string().trim_end_matches('.').to_owned()))
        .filter(|(_, name)| only.is_none_or(|o| o == name))
        .map(|(z, zone)| ZoneView {
            zone,
            serial: zones.serial,
            records: z
                .records()
                .into_iter()
                .map(|r| RecordView {
                    name: r.name.to_string(),
                    rtype: r.record_type().to_string(),
                    ttl: r.ttl,
                    value: crate::dns::records::presentation(&r.data),
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.zone.cmp(&b.zone));
    out
}
