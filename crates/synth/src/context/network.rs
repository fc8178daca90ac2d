//! The network stack: the VPC, its subnets and endpoints.

use super::*;
use ipnet::Ipv4Net;

#[derive(Debug, Serialize)]
pub struct NetworkContext {
    pub common: Common,
    pub cidr: String,
    pub subnets: Vec<Subnet>,
    pub interface_endpoints: Vec<InterfaceEndpoint>,
    pub proxy: bool,
}

#[derive(Debug, Serialize)]
pub struct Subnet {
    pub logical_id: String,
    pub index: usize,
    pub cidr: String,
}

#[derive(Debug, Serialize)]
pub struct InterfaceEndpoint {
    pub logical_id: String,
    pub service: &'static str,
}

pub fn network(env: &str, spec: &Spec) -> NetworkContext {
    // Validation guarantees a /16 to /24 block, so eight subnets fit.
    let subnets = spec
        .network
        .cidr
        .parse::<Ipv4Net>()
        .ok()
        .and_then(|net| net.subnets(net.prefix_len() + 3).ok())
        .map(|s| s.take(usize::from(spec.network.azs)).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut endpoints = spec.network.endpoints.clone();
    endpoints.sort();
    NetworkContext {
        common: Common::new(
            env,
            spec,
            "network",
            "VPC, private subnets, security groups, VPC endpoints",
        ),
        cidr: spec.network.cidr.clone(),
        subnets: subnets
            .iter()
            .enumerate()
            .map(|(index, net)| Subnet {
                logical_id: format!("PrivateSubnet{}", index + 1),
                index,
                cidr: net.to_string(),
            })
            .collect(),
        interface_endpoints: endpoints
            .iter()
            .filter(|e| **e != Endpoint::S3)
            .map(|e| InterfaceEndpoint {
                logical_id: format!("{}Endpoint", pascal(e.service())),
                service: e.service(),
            })
            .collect(),
        proxy: spec.database.proxy,
    }
}
