//! Generates docker-compose.yml and the gateway's nginx config from the topology in env/.
//!
//! Not built yet: the compose generator, its Dockerfiles and the Kubernetes manifests come
//! with the MongoDB engine (README, "Behaviour worth knowing"). The nginx config it will
//! write is already rendered by `common::balancer` in its container mode.
