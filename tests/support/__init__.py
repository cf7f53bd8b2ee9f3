"""Test doubles for services we cannot run here, and helpers shared by the test tiers."""
