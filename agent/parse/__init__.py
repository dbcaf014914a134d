"""Pure parsing: bytes -> our document types.

stem for headers, footers and certificates; our fast paths for router
entries and server descriptors; CollecTor archives.
"""
