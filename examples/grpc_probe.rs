//! A tonic client for the gRPC reference app (`examples/grpc_app.rs`): calls `Identity/WhoAmI`,
//! `Identity/Watch` (its first message) and `Greeter/Hello` with and without a session token and
//! prints each call's gRPC status, one line each, for `.ci/run` to check. A real gRPC client over HTTP/2, as users' clients are.
//!
//! ```text
//! cargo run --example grpc_probe -- http://127.0.0.1:50051 ory_st_...
//! ```

use std::process::ExitCode;

use tonic::{metadata::MetadataValue, transport::Channel, Code, Request};

use test_support::demo;

use demo::{
    greeter_client::GreeterClient, identity_client::IdentityClient, HelloRequest, WatchRequest,
    WhoAmIRequest,
};

fn with_token<T>(message: T, token: Option<&str>) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = token.parse().map_err(|_| "the token is not ASCII")?;
        request.metadata_mut().insert("x-session-token", value);
    }
    Ok(request)
}

fn code<T>(result: &Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn run(url: String, token: String) -> Result<(), String> {
    let channel = Channel::from_shared(url)
        .map_err(|error| format!("not a URL: {error}"))?
        .connect()
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let mut identity = IdentityClient::new(channel.clone());
    let mut greeter = GreeterClient::new(channel);
    for (name, token) in [("anonymous", None), ("with token", Some(token.as_str()))] {
        let who = identity
            .who_am_i(with_token(WhoAmIRequest {}, token)?)
            .await;
        println!("Identity/WhoAmI {name}: {:?}", code(&who));
        let watch = match identity.watch(with_token(WatchRequest {}, token)?).await {
            Ok(stream) => match stream.into_inner().message().await {
                Ok(Some(_first)) => Ok(()),
                Ok(None) => Err(tonic::Status::unknown("the stream ended before a message")),
                Err(status) => Err(status),
            },
            Err(status) => Err(status),
        };
        println!("Identity/Watch {name}: {:?}", code(&watch));
        let hello = greeter.hello(with_token(HelloRequest {}, token)?).await;
        println!("Greeter/Hello {name}: {:?}", code(&hello));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: grpc_probe URL SESSION_TOKEN");
        return ExitCode::from(2);
    };
    match run(url, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("grpc_probe: {error}");
            ExitCode::from(2)
        }
    }
}
