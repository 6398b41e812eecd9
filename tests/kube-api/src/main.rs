//! `kube-test-apiserver --listen 127.0.0.1:PORT --kubeconfig-out FILE`: the Kubernetes API test
//! server of this crate, serving until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Kubernetes API test server (HTTPS, bearer token) for Portcullis's tests")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (server address, CA, token).
    #[arg(long)]
    kubeconfig_out: PathBuf,
}

fn main() {
    let args = Args::parse();
    let server = kube_test_apiserver::ApiServer::serve(args.listen, &args.kubeconfig_out);
    println!("listening on {}", server.addr);
    loop {
        std::thread::park();
    }
}
