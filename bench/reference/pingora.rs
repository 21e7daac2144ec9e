//! Stock pingora as a reference for the pass-through scenario: pingora's own
//! server (its listener, runtimes and buffers) with the smallest proxy a
//! user could write. What it costs per request is what pingora's HTTP/1
//! proxy path costs on this machine, with nothing of sidecast around it.
//!
//!     pingora-ref LISTEN_ADDR ORIGIN_ADDR THREADS

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Reference {
    origin: String,
}

#[async_trait]
impl ProxyHttp for Reference {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.origin.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin), Some(threads)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: pingora-ref LISTEN_ADDR ORIGIN_ADDR THREADS");
        std::process::exit(2);
    };
    let threads: usize = threads.parse().expect("THREADS is a number");
    // The same pool size as sidecast's proxy logic.
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, Reference { origin });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
