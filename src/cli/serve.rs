//! `dvsp serve`: the verification service on REST, gRPC and metrics ports.
use anyhow::Context;
use dvsp_server::config::ServeArgs;
use dvsp_server::tls::Listener;

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let state = a.state().await?;
        let tls = a.tls()?;
        if tls.is_none() {
            tracing::warn!("no --tls-cert: REST and gRPC serve plaintext (terminate TLS in front)");
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind(&a.bind)
            .await
            .with_context(|| format!("binding {}", a.bind))?;
        let grpc = match &a.grpc_bind {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        let metrics = tokio::net::TcpListener::bind(&a.metrics_bind)
            .await
            .with_context(|| format!("binding {}", a.metrics_bind))?;
        let l = state.lineup();
        tracing::info!(addr = %listener.local_addr()?, model = %l.serving.card.model_id, threshold = l.serving.threshold, "serving");
        println!(
            "dvsp serving model {} on {scheme}://{} (T = {:.4}, {})",
            l.serving.card.model_id,
            listener.local_addr()?,
            l.serving.threshold,
            state.loading.operating_point.name()
        );
        if let Some(p) = &l.previous {
            println!(
                "dvsp keeps the previous model {} loaded for subjects not yet re-embedded",
                p.card.model_id
            );
        }
        drop(l);
        // A signal, or either server ending (an error), stops both; each finishes its
        // in-flight requests.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop = std::sync::Arc::new(stop);
        let on_signal = stop.clone();
        tokio::spawn(async move {
            dvsp_server::shutdown_signal().await;
            let _ = on_signal.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut servers = tokio::task::JoinSet::new();
        println!("dvsp serving metrics on http://{}/metrics", metrics.local_addr()?);
        let (metrics_state, rx) = (state.clone(), stopped.clone());
        servers.spawn(async move {
            dvsp_server::serve_metrics(metrics, metrics_state, until_stopped(rx))
                .await
                .context("the metrics server")
        });
        if let Some(l) = grpc {
            println!("dvsp serving gRPC on {} (TLS: {})", l.local_addr()?, tls.is_some());
            let (state, rx) = (state.clone(), stopped.clone());
            let l = Listener::new(l, tls.clone());
            servers.spawn(async move {
                dvsp_server::grpc::serve(l, state, until_stopped(rx))
                    .await
                    .context("the gRPC server")
            });
        }
        let listener = Listener::new(listener, tls);
        servers.spawn(async move {
            dvsp_server::serve(listener, state, until_stopped(stopped))
                .await
                .context("the HTTP server")
        });
        let mut result = Ok(());
        while let Some(ended) = servers.join_next().await {
            let _ = stop.send(true);
            if let Err(e) = ended? {
                tracing::error!(error = %format!("{e:#}"), "server stopped");
                result = result.and(Err(e));
            }
        }
        result
    })
}
