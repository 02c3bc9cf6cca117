"""Load-balancer helpers the built-in `slb` and `maintenance` plugins share (not a plugin):
find an instance in CLB vserver groups (`clb`) and ALB/NLB server groups (`server_groups`),
batch changes per group (`batch`), record and restore memberships (`membership`).
They act only through what the plugins hand them: `ctx.cloud` for reads, `ctx.act_many`."""
