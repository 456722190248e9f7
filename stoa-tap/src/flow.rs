//! Types shared by the transport and application stages.

/// Which way bytes travel on a connection once client and server are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Request bytes: client -> server.
    ClientToServer,
    /// Response bytes: server -> client.
    ServerToClient,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// 0 for client -> server, 1 for server -> client; handy for two-slot arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// Why a half-connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// Orderly close (FIN) after all data up to it was delivered.
    Fin,
    /// Reset (RST).
    Rst,
}

/// Why a connection left the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed, or one side reset.
    Closed,
    /// No packet for longer than the idle timeout.
    IdleTimeout,
    /// Removed to stay within the memory cap.
    Evicted,
    /// The capture ended with the connection still open.
    EndOfCapture,
}
