//! `gatehouse-admin`: the operator command (connections, keys, event replay, MoMo
//! provisioning), run by hand with the deploy credentials; not a Lambda function, not a route.
//! Everything it does is `gatehouse::admin` (docs/admin.md).

fn main() -> std::process::ExitCode {
    gatehouse::admin::main()
}
