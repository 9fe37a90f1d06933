//! nginx config rendering (work in progress).
