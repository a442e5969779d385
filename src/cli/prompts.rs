//! The permission requests `client run` asks about at the terminal: one at
//! a time, in the order they came, each once (a request sent again after a
//! reconnect is not asked twice), and dropped when answered elsewhere.

use std::collections::{HashSet, VecDeque};

use openwork_host::protocol::PermissionRequest;

/// Requests waiting for the person at the terminal; the first is being asked.
#[derive(Default)]
pub struct PromptQueue {
    waiting: VecDeque<PermissionRequest>,
    /// Requests answered here or elsewhere: never asked again.
    done: HashSet<String>,
}

impl PromptQueue {
    /// Queues a request; true when it is new and is now the one being asked
    /// (so the caller shows its prompt).
    pub fn offer(&mut self, request: PermissionRequest) -> bool {
        if self.done.contains(&request.request_id)
            || self
                .waiting
                .iter()
                .any(|r| r.request_id == request.request_id)
        {
            return false;
        }
        self.waiting.push_back(request);
        self.waiting.len() == 1
    }

    /// Whether `request_id` is waiting already (asked, or queued).
    pub fn contains(&self, request_id: &str) -> bool {
        self.waiting.iter().any(|r| r.request_id == request_id)
    }

    /// The request being asked.
    pub fn current(&self) -> Option<&PermissionRequest> {
        self.waiting.front()
    }

    /// How many more wait behind the current one.
    pub fn behind(&self) -> usize {
        self.waiting.len().saturating_sub(1)
    }

    /// Ends a request (answered here, or resolved elsewhere); true when it
    /// was being asked and another now is (so the caller shows its prompt).
    pub fn finish(&mut self, request_id: &str) -> bool {
        self.done.insert(request_id.to_owned());
        let was_current = self.current().is_some_and(|r| r.request_id == request_id);
        self.waiting.retain(|r| r.request_id != request_id);
        was_current && self.current().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openwork_host::protocol::Decision;

    fn request(id: &str) -> PermissionRequest {
        PermissionRequest {
            request_id: id.to_owned(),
            task_id: "t_1".to_owned(),
            tool: "command".to_owned(),
            summary: format!("asks {id}"),
            detail: String::new(),
            options: vec![Decision::Once, Decision::Reject],
            always: None,
            expires_at: "2030-01-01T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn requests_are_asked_one_at_a_time_in_order() {
        let mut queue = PromptQueue::default();
        assert!(queue.offer(request("a")), "the first is asked at once");
        assert!(!queue.offer(request("b")), "the second waits");
        assert_eq!(queue.behind(), 1);
        assert_eq!(queue.current().unwrap().request_id, "a");
        assert!(queue.finish("a"));
        assert_eq!(queue.current().unwrap().request_id, "b");
        assert!(!queue.finish("b"));
        assert!(queue.current().is_none());
    }

    #[test]
    fn a_request_sent_again_is_not_asked_twice() {
        let mut queue = PromptQueue::default();
        assert!(queue.offer(request("a")));
        assert!(!queue.offer(request("a")), "re-sent while waiting");
        assert_eq!(queue.behind(), 0);
        queue.finish("a");
        assert!(!queue.offer(request("a")), "re-sent after it was answered");
        assert!(queue.current().is_none());
    }

    #[test]
    fn one_resolved_elsewhere_leaves_the_queue_without_changing_the_prompt() {
        let mut queue = PromptQueue::default();
        queue.offer(request("a"));
        queue.offer(request("b"));
        queue.offer(request("c"));
        assert!(!queue.finish("b"), "b was not being asked");
        assert_eq!(queue.current().unwrap().request_id, "a");
        assert!(queue.finish("a"));
        assert_eq!(queue.current().unwrap().request_id, "c");
        assert!(!queue.contains("b"));
    }
}
