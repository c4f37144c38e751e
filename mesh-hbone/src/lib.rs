//! Workload identity certificates, SPIFFE-verifying mTLS and the HBONE tunnel.
