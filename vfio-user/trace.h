#include "trace/trace-vfio_user.h"
