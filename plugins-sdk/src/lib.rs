//! The Refract projector SDK. (Being built.)
