//! Test plugin `network`: tries to use sockets and reports what happened.

use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// Probes the network from inside the sandbox; every attempt targets the loopback address.
pub struct Network;

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("error: {error}"),
    }
}

/// What each attempt gave; in a sandbox every part should say `error`.
pub fn probe() -> String {
    let connect = outcome(TcpStream::connect("127.0.0.1:1"));
    let listen = outcome(TcpListener::bind("127.0.0.1:0"));
    let udp = outcome(UdpSocket::bind("127.0.0.1:0"));
    let resolve = outcome("localhost:80".to_socket_addrs());
    format!("connect 127.0.0.1:1: {connect}; listen: {listen}; udp: {udp}; resolve: {resolve}")
}

impl Plugin for Network {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-network",
            env!("CARGO_PKG_VERSION"),
            "Tries to use sockets",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let report = probe();
        Ok(nodes
            .iter()
            .map(|_| Decision::skip(report.clone()))
            .collect())
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Network);
