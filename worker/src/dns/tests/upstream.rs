//! Stand-in upstream DNS servers on loopback: one that knows a single name, and dead ones.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// The one name the stand-in upstream knows.
pub(super) const FIXED_NAME: &str = "example.test.";

/// A running stand-in upstream (stops when dropped).
pub(super) struct Upstream {
    pub addr: SocketAddr,
    _server: Server<Fixed>,
}

/// An upstream answering [`FIXED_NAME`] with 198.18.0.99 and NXDOMAIN for anything else.
pub(super) async fn start() -> Upstream {
    start_with(Ipv4Addr::new(198, 18, 0, 99)).await
}

/// An upstream answering [`FIXED_NAME`] with `answer` (UDP and TCP on one port).
pub(super) async fn start_with(answer: Ipv4Addr) -> Upstream {
    let (udp, tcp, addr) = bind().await;
    let mut server = Server::new(Fixed { answer });
    server.register_socket(udp);
    server.register_listener(tcp, std::time::Duration::from_secs(5), 8);
    Upstream {
        addr,
        _server: server,
    }
}

/// An upstream that receives but never answers, over UDP or TCP: forwarding must time out.
pub(super) struct Silent {
    pub addr: SocketAddr,
    _udp: UdpSocket,
    _tcp: TcpListener,
}

pub(super) async fn silent() -> Silent {
    let (udp, tcp, addr) = bind().await;
    Silent {
        addr,
        _udp: udp,
        _tcp: tcp,
    }
}

async fn bind() -> (UdpSocket, TcpListener, SocketAddr) {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("bound");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
}

pub(super) struct Fixed {
    answer: Ipv4Addr,
}

#[async_trait::async_trait]
impl RequestHandler for Fixed {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let known = request.queries.queries().first().filter(|q| {
            q.query_type() == RecordType::A && q.name().to_string().eq_ignore_ascii_case(FIXED_NAME)
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let records: Vec<Record> = match known {
            Some(q) => vec![Record::from_rdata(
                Name::from(q.name().clone()),
                60,
                RData::A(A(self.answer)),
            )],
            None => {
                metadata.response_code = ResponseCode::NXDomain;
                vec![]
            }
        };
        let reply = MessageResponseBuilder::from_message_request(request).build(
            metadata,
            records.iter(),
            [],
            [],
            [],
        );
        response
            .send_response(reply)
            .await
            .expect("stand-in upstream sends its answer")
    }
}
