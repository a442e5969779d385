//! `task.*`: run, cancel, get, list, subscribe, unsubscribe, logs.

use crate::auth::Scope;
use crate::protocol::{
    TaskIdParams, TaskListParams, TaskListResult, TaskLogsParams, TaskLogsResult, TaskRecord,
    TaskRunParams, TaskRunResult, TaskSubscribeParams, TaskSubscribeResult, TaskUnsubscribeResult,
};
use crate::rpc::RpcError;
use crate::rpc::methods::{CallContext, require_scope};

pub(super) async fn run(ctx: CallContext, p: TaskRunParams) -> Result<TaskRunResult, RpcError> {
    let principal = ctx.session.principal();
    // A prompt uses the OpenCode agent, which the `opencode` scope stands for.
    if p.runtime.as_deref() == Some("opencode") {
        require_scope(
            &principal,
            Scope::Opencode,
            "`task.run` with `runtime: \"opencode\"`",
            None,
        )?;
    }
    let (result, feed) = ctx.host().run_task(p, &principal).await?;
    // The caller follows the task it started, from its first chunk, after the reply.
    let (session, task_id) = (ctx.session.clone(), result.task_id.clone());
    ctx.after_reply(move || session.subscribe(&task_id, feed));
    Ok(result)
}

pub(super) async fn cancel(ctx: CallContext, p: TaskIdParams) -> Result<TaskRecord, RpcError> {
    Ok(ctx.host().cancel_task(&p.task_id).await?)
}

pub(super) async fn get(ctx: CallContext, p: TaskIdParams) -> Result<TaskRecord, RpcError> {
    Ok(ctx.host().task(&p.task_id).await?)
}

pub(super) async fn list(ctx: CallContext, p: TaskListParams) -> Result<TaskListResult, RpcError> {
    Ok(TaskListResult {
        tasks: ctx.host().list_tasks(p).await?,
    })
}

pub(super) async fn subscribe(
    ctx: CallContext,
    p: TaskSubscribeParams,
) -> Result<TaskSubscribeResult, RpcError> {
    let (feed, start) = ctx.host().follow_task(&p.task_id, p.from_seq).await?;
    let (session, task_id) = (ctx.session.clone(), p.task_id.clone());
    ctx.after_reply(move || session.subscribe(&task_id, feed));
    Ok(TaskSubscribeResult {
        task_id: p.task_id,
        status: start.status,
        from_seq: start.from_seq,
        last_seq: start.last_seq,
    })
}

pub(super) async fn unsubscribe(
    ctx: CallContext,
    p: TaskIdParams,
) -> Result<TaskUnsubscribeResult, RpcError> {
    // Unknown ids are reported, so that a typo is not silently accepted.
    if !ctx.session.unsubscribe(&p.task_id) {
        ctx.host().task(&p.task_id).await?;
        return Ok(TaskUnsubscribeResult {
            was_subscribed: false,
        });
    }
    Ok(TaskUnsubscribeResult {
        was_subscribed: true,
    })
}

pub(super) async fn logs(ctx: CallContext, p: TaskLogsParams) -> Result<TaskLogsResult, RpcError> {
    Ok(ctx.host().task_logs(p).await?)
}
