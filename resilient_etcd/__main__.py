import sys

from resilient_etcd.cli import main

sys.exit(main())
