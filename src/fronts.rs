//! Fronts: one module per gateway protocol, each turning its gateway's request into the engine's
//! [`DecisionInput`](crate::decision::DecisionInput) and the engine's
//! [`Decision`](crate::decision::Decision) into its gateway's answer (DESIGN §9). A front holds no
//! policy logic; the engine, credentials and policies know no front.
//!
//! - [`service_callout`]: Apigee's ServiceCallout, `POST /v1/decide` with a JSON description.

pub mod service_callout;
