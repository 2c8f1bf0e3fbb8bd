//! Sending and receiving frames with file descriptors attached.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::wire::MAX_FRAME;

/// Whether `fd` becomes readable within `wait` (a pidfd: its process
/// exited).
pub(crate) fn readable_within(fd: impl AsFd, wait: std::time::Duration) -> io::Result<bool> {
    let mut polls = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: wait.as_secs() as _,
        tv_nsec: wait.subsec_nanos() as _,
    };
    loop {
        match rustix::event::poll(&mut polls, Some(&timeout)) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `frame` without raising `SIGPIPE` if the peer is gone.
pub(crate) fn send_all(stream: &UnixStream, mut frame: &[u8]) -> io::Result<()> {
    while !frame.is_empty() {
        match rustix::net::send(stream, frame, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => frame = &frame[n..],
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `frame` with `fds` attached to its first byte.
pub(crate) fn send_with_fds(
    stream: &UnixStream,
    frame: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.is_empty() {
        return send_all(stream, frame);
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let sent = loop {
        match sendmsg(
            stream,
            &[IoSlice::new(frame)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        }
    };
    send_all(stream, &frame[sent..])
}

/// Reads frames from a stream, collecting the descriptors that arrive.
pub(crate) struct FdReader {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl FdReader {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
        }
    }

    /// The next descriptor received, in order.
    pub(crate) fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(32))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf[self.end..])];
            match recvmsg(
                self.stream.as_fd(),
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(msg) => break msg.bytes,
                Err(e) if e == rustix::io::Errno::INTR => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                self.fds.extend(fds);
            }
        }
        self.end += received;
        Ok(received)
    }

    /// Reads one frame body; `Ok(None)` at end of stream.
    pub(crate) fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        while self.end - self.start < 4 {
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a frame is over the size limit",
            ));
        }
        while self.end - self.start < 4 + len {
            if self.buf.len() < 4 + len {
                self.buf.resize(4 + len, 0);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame",
                ));
            }
        }
        let body = self.buf[self.start + 4..self.start + 4 + len].to_vec();
        self.start += 4 + len;
        Ok(Some(body))
    }
}
