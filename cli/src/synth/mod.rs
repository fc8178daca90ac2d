//! Rendering an environment into CloudFormation templates.
pub mod command;
