"""composefs images: an EROFS metadata image plus a content-addressed object store."""
