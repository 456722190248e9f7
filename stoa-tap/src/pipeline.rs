//! Drives source -> decode -> tcp -> http1.
