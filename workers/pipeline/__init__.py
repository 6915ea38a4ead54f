"""The matting pipeline: stages over plate frames, and the pure logic they use."""
